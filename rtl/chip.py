"""The large units of one preset side by side, for checking that they fit one device together.

RPAccel's top level (the controller that moves embeddings into the MLP engine and scores into the top-k units)
is not built yet, but the device it will go on is fixed: :class:`ChipParts` puts the preset's MLP engine, its
embedding unit (with the memory port leaving the chip) and its ``topk_units`` top-k units into one design, each
with its own ports, so that synthesis and place-and-route answer whether the preset fits the device and at what
clock its units run when they share it. ``rpaccel synth parts`` and ``rpaccel bench chip --whole`` build it
(Yosys 0.69 needs the synthesis flow's ``splitnets`` step for it, see :mod:`rpaccel.flow.synth`).
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .embedding import EmbeddingUnit
from .mlp import MLPEngine
from .topk import TopKUnits

__all__ = ["ChipParts"]


class ChipParts(wiring.Component):
    """The MLP engine, the embedding unit and the top-k units of ``config``, unconnected, in one design.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig

    Members
    -------
    mlp : Out(MLPEngine signature)
        The engine's ports, as they are.
    embedding : Out(EmbeddingUnit signature)
        The embedding unit's ports (its memory port included).
    topk : Out(TopKUnits signature)
        The ports of the ``config.topk_units`` top-k units.
    """

    def __init__(self, config):
        self.config = config
        self._parts = {"mlp": MLPEngine(config), "embedding": EmbeddingUnit(config),
                       "topk": TopKUnits(config.topk_units, config.k_max)}
        super().__init__({name: Out(part.signature) for name, part in self._parts.items()})

    def elaborate(self, platform):
        m = Module()
        for name, part in self._parts.items():
            m.submodules[name] = part
            # Port by port (wiring.connect does not take the flipped arrays of stream interfaces).
            ours = part.signature.flatten(getattr(self, name))
            for (_, member, outer), (_, _, inner) in zip(ours, part.signature.flatten(part), strict=True):
                m.d.comb += inner.eq(outer) if member.flow == In else outer.eq(inner)
        return m
