"""The components ``rpaccel synth`` (and anything else that lists blocks) knows, built from a configuration."""

from collections.abc import Callable
from dataclasses import dataclass

from ..rtl.accel.top import RPAccel
from ..rtl.array import SystolicArray
from ..rtl.chip import ChipParts
from ..rtl.embedding import EmbeddingUnit
from ..rtl.filter import FilterUnit
from ..rtl.interaction import Interaction
from ..rtl.memory import BlockRAMMemory
from ..rtl.mlp import MLPEngine
from ..rtl.pe import ProcessingElement
from ..rtl.postproc import PostProcessor
from ..rtl.topk import TopKUnit, TopKUnits

__all__ = ["CATALOG", "CatalogEntry", "UnknownComponent", "lookup"]


class UnknownComponent(KeyError):
    """There is no component of that name (the message lists the known ones)."""

    def __str__(self):
        return self.args[0]


@dataclass(frozen=True)
class CatalogEntry:
    """A synthesisable component.

    Attributes
    ----------
    name : str
        Name used on the command line.
    description : str
        One line for listings.
    build : callable
        ``build(config)`` returns the :class:`amaranth.lib.wiring.Component` for an
        :class:`~rpaccel.config.AccelConfig`.
    """

    name: str
    description: str
    build: Callable


CATALOG = {entry.name: entry for entry in [
    CatalogEntry("pe", "processing element: int8 x int8 multiply, int32 accumulate, two weight banks",
                 lambda config: ProcessingElement()),
    CatalogEntry("postproc", "post-processing unit: bias add, requantise to int8, ReLU (stream, 6 stages)",
                 lambda config: PostProcessor()),
    CatalogEntry("embedding", "embedding unit: static + dynamic caches, sum-pooling, requantisation (memory port "
                 "on pins)", EmbeddingUnit),
    CatalogEntry("memory-bram", "64 KiB of block RAM serving the embedding unit's memory port (two ports: unit, "
                 "host)", lambda config: _bram_memory(config, 64 * 1024)),
    CatalogEntry("array", "systolic array: R x C int8 PEs, split at run time into 1, 2 or 4**k sub-arrays",
                 SystolicArray),
    CatalogEntry("mlp", "MLP engine: systolic array, weight/activation/accumulator buffers, post-processors",
                 MLPEngine),
    CatalogEntry("pe-lut", "processing element with its multiplier in LUTs (the array's PEs beyond its DSP share)",
                 lambda config: ProcessingElement(multiplier="lut")),
    CatalogEntry("topk", "top-k unit: streaming exact sorted top-k, k <= k_max, one candidate per cycle",
                 lambda config: TopKUnit(config.k_max)),
    CatalogEntry("topk-units", "the preset's topk_units top-k units on independent streams",
                 lambda config: TopKUnits(config.topk_units, config.k_max)),
    CatalogEntry("filter", "filter unit: the k best of up to filter_capacity candidates as a set, by radix "
                 "selection", lambda config: FilterUnit(config.filter_capacity)),
    CatalogEntry("interaction", "interaction unit: DLRM dot (pairwise dot products, requantised) or cat, chosen per "
                 "item", Interaction.for_config),
    CatalogEntry("accel", "RPAccel, the whole chip: controller, fetcher, embedding unit, MLP engine, joiner and "
                 "interaction unit, top-k and filter units (memory port on pins)",
                 lambda config: RPAccel(config, memory="port")),
    CatalogEntry("parts", "the preset's MLP engine, embedding unit and top-k units side by side (whole-chip fit)",
                 ChipParts),
]}


def _bram_memory(config, size):
    from ..embedding import EmbeddingGeometry

    g = EmbeddingGeometry.from_config(config)
    return BlockRAMMemory(lines=min(size // g.line_bytes, 1 << g.addr_bits), line_bytes=g.line_bytes,
                          addr_bits=g.addr_bits, max_burst=g.max_burst)


def lookup(name):
    """The catalog entry ``name``.

    Raises
    ------
    UnknownComponent
        If there is none.
    """
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownComponent(f"unknown component {name!r} (known: {', '.join(CATALOG)})") from None
