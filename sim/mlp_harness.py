"""A simulation wrapper of the MLP engine that holds the command streams back until the weights are loaded.

In a system the host loads a model's weights and then sends commands; a file-driven testbench
(:class:`~rpaccel.sim.player.Player`) plays every stream at once. :class:`EngineHarness` restores the order:
it passes every port of :class:`~rpaccel.rtl.mlp.MLPEngine` through, but lets no command in before ``preload``
words have been written to the weight memory. ``split`` and ``preload`` are static inputs of a run.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..rtl.mlp import EngineGeometry, MLPEngine

__all__ = ["EngineHarness", "play_model", "play_plan", "simulate_plan"]


class EngineHarness(wiring.Component):
    """:class:`~rpaccel.rtl.mlp.MLPEngine` with its commands gated until ``preload`` weight words are written.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    """

    def __init__(self, config):
        self.config = config
        self.geometry = EngineGeometry(config)
        members = MLPEngine.members(self.geometry)
        members["preload"] = In(range(self.geometry.weight_words + 1))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = MLPEngine(self.config)
        loaded = Signal(range(self.geometry.weight_words + 1))
        released = Signal()
        m.d.comb += released.eq(loaded >= self.preload)
        with m.If(self.wload.valid & self.wload.ready & ~released):
            m.d.sync += loaded.eq(loaded + 1)
        m.d.comb += [engine.split.eq(self.split), self.idle.eq(engine.idle)]
        for lane in range(self.geometry.lanes):
            m.d.comb += self.layers_done[lane].eq(engine.layers_done[lane])
        wiring.connect(m, wiring.flipped(self.wload), engine.wload)
        for lane in range(self.geometry.lanes):
            cmd, inner = getattr(self, f"cmd{lane}"), getattr(engine, f"cmd{lane}")
            m.d.comb += [
                inner.valid.eq(cmd.valid & released),
                inner.payload.eq(cmd.payload),
                cmd.ready.eq(inner.ready & released),
            ]
            wiring.connect(m, wiring.flipped(getattr(self, f"act{lane}")), getattr(engine, f"act{lane}"))
            wiring.connect(m, getattr(engine, f"out{lane}"), wiring.flipped(getattr(self, f"out{lane}")))
        return m


def simulate_plan(config, plan, *, pause=0.0, seed=0, max_cycles=1_000_000):
    """Run an :class:`~rpaccel.host.driver.mlp.EnginePlan` on :class:`EngineHarness` in the Amaranth simulator
    (for small configurations), with random idle inputs and back-pressured outputs; return
    ``(decoded outputs, cycles)``."""
    import numpy as np

    from ..host.driver.codec import codec
    from .streams import StreamSink, StreamSource, payload_shape, run_simulation

    dut = EngineHarness(config)
    got, cycles = {}, {}

    async def setup(ctx):
        for name, value in plan.statics().items():
            ctx.set(getattr(dut, name), value)

    benches = [setup]
    for index, (port, words) in enumerate(plan.words().items()):
        async def source(ctx, port=port, words=words, index=index):
            stream = getattr(dut, port)
            await StreamSource(stream, pause=pause, seed=seed * 101 + index).send(
                ctx, codec(payload_shape(stream)).unpack_values(words))
        benches.append(source)
    for index, (port, count) in enumerate(plan.expect().items()):
        if count:
            async def sink(ctx, port=port, count=count, index=index):
                receiver = StreamSink(getattr(dut, port), pause=pause, seed=seed * 103 + index)
                got[port] = await receiver.receive(ctx, count)
                cycles[port] = receiver.cycles
            benches.append(sink)
    run_simulation(dut, benches, max_cycles=max_cycles, name="mlp-engine")
    outputs = {lane: program.decode(np.array(got[f"out{lane}"]).reshape(program.outputs, program.lane_cols))
               for lane, program in plan.lanes.items()}
    return outputs, max(cycles.values())


def play_plan(config, plan, *, pause=0.0, seed=1, direct=True, max_cycles=100_000_000, output_cycles=False,
              not_before=None):
    """Run an :class:`~rpaccel.host.driver.mlp.EnginePlan` on :class:`EngineHarness` in Verilator through the
    file-driven :class:`~rpaccel.sim.player.Player`; return ``(decoded outputs, PlayerResult)``. With
    ``output_cycles`` the result records the cycle of every output transfer
    (:attr:`~rpaccel.sim.player.PlayerResult.output_cycles`); ``not_before`` gives input words not-before cycles
    (``{port: cycles}``, see :meth:`Player.run <rpaccel.sim.player.Player.run>`)."""
    from .player import Player

    result = Player(EngineHarness, config).run(plan.player_inputs(), expect=plan.expect(), statics=plan.statics(),
                                               packed=True, pause=pause, seed=seed, direct=direct,
                                               max_cycles=max_cycles, output_cycles=output_cycles,
                                               not_before=not_before)
    return plan.decode(result.outputs), result


def play_model(config, qmodel, dense_q, ids, *, split=1, chunk=None, pause=0.0, seed=1, direct=True,
               max_cycles=100_000_000):
    """Score a batch with a :class:`~rpaccel.host.quant.QuantModel` whose MLPs run on the engine in Verilator
    (:class:`~rpaccel.host.driver.models.EngineModel`, one :func:`play_plan` per MLP; pooling and interaction on
    the host).

    Returns
    -------
    (dict, dict)
        The engine's tensors under the keys of ``rpaccel.host.reference.run(..., trace=True)`` (see
        :meth:`~rpaccel.host.driver.models.EngineModel.run`), and ``{mlp: PlayerResult}`` of each run.
    """
    from ..host.driver.models import EngineModel

    engine = EngineModel(qmodel, config, split=split, chunk=chunk)
    results = []  # one per MLP, in the order EngineModel.run runs them: that of engine.mlps

    def execute(plan):
        outputs, result = play_plan(config, plan, pause=pause, seed=seed, direct=direct, max_cycles=max_cycles)
        results.append(result)
        return outputs

    tensors = engine.run(dense_q, ids, execute)
    return tensors, dict(zip(engine.mlps, results))
