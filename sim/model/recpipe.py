"""RecPipe's analytical cost model of RPAccel, as a reference beside the exact model.

The RecPipe artifact (``harvard-acc/RecPipe``, ``RecPipeAccelModel.py``, the ``Accelerator.run_query`` path its
accelerator sweeps use) estimates each stage of a query on one engine (a whole array or one sub-array) as

    latency = input PCIe + embedding + bottom MLP + top MLP + sort + output PCIe

in cycles of an 8 ns clock, and a query's service time as the sum over its stages. :func:`recpipe_query`
computes the same figure for an :class:`~rpaccel.config.AccelConfig` and a pipeline of :class:`RecPipeStage`,
term by term, so a table can put RecPipe's estimate next to the chip's exact cycles for the same configuration
and query. With RecPipe's own parameters it reproduces the artifact's logged service times
(``logs/example_logs/figure13_accel_*_stage.out``) to the last printed digit: RM-large on 4,096 items on one
128 x 128 array, 2.0907 ms; RM-small on 4,096 then RM-large on 512, each on a 64 x 64 sub-array, 1.3944 ms.

The terms, as the artifact computes them, for a stage of ``items`` items on a sub-array of ``R`` rows (the input
dimension K of a weight tile) and ``C`` columns (the output dimension N):

* **Input PCIe**: ``5 + 12 * items / 4096`` "ms" (a Cascade Lake to T4 measurement), multiplied by 1,000 and
  added to the cycles.
* **Embedding**: ``bytes = 4 * emb_dim * lookups * items`` (float32 rows; Criteo's 26 lookups of one ID); with
  the L1 miss rate fixed at 0.50, the missed half comes from DRAM in ``latency + bytes / 2 / bandwidth`` cycles
  and the hit half from the on-chip cache at 64 bytes a cycle, one after the other.
* **Bottom and top MLP**, per layer K x N: the weights (4 bytes each) reloaded from DRAM, ``latency + bytes /
  bandwidth`` cycles per slice of the 1,000,000-byte weight SRAM (no double-buffering), plus the compute
  ``(min(N, C) + min(K, R) + items) * ceil(K / R) * ceil(N / C)``: fill and drain of one tile, and every item,
  for every tile, tiles one after another.
* **Sort**: on chip, ``items / 16`` (a 64-byte SRAM word of 4-byte scores a cycle), then divided by the clock
  period in ns. The artifact ran under Python 2 (its Docker image installs Ubuntu 16.04's ``python``), where both
  divisions of integers floor: its figures count ``floor(floor(items / 16) / 8)`` cycles (47 for 6,140 items, not
  47.97), and so does this.
* **Output PCIe**: ``5 + 5 * top_n / 4096`` "ms", multiplied by 1,000 as the input term; the sweeps call
  ``run_query`` with ``top_n = 0``, so only the 5 "ms" latency is in RecPipe's figures.

A split array's stages each get ``floor(sub-arrays / stages)`` engines (``RecPipeMain.py``). Each engine is a
process that takes whole queries from its stage's queue: a query's items are not divided among the engines, so
they raise the throughput, not a query's service time, which is one engine's.

Two of the terms mix units. The PCIe terms are written in milliseconds and added as cycles (5 ms counts as 5,000
cycles, 40 us, where 5 ms are 625,000 cycles of 8 ns), and the sort term, a cycle count, is divided by the clock
period as if it were nanoseconds (``items / 128`` cycles at 8 ns). Both are kept by default, so the estimate is
RecPipe's; ``fix_pcie=True`` and ``fix_sort=True`` give the corrected terms (``ms * 1e6 / clock_ns`` and
``ceil(items / 16)`` cycles), to show what the errors are worth.

Where the artifact leaves a choice open for a configuration or model it never ran, this module decides:

* **Bandwidth per engine**: each of RecPipe's sub-array configurations (``configs/accel_configs/hardconf_N.json``)
  has its own DRAM bandwidth, the whole array's 32 GB/s shared among the ``N`` sub-arrays (8 for 4 x 64 x 64, 2
  for 16 x 32 x 32); here the whole memory's bandwidth is divided by the split in the same way. The exception is
  ``hardconf_64.json``, which gives a 16 x 16 sub-array 0.125 GB/s, a quarter of its 1/64 share (0.5): its
  figures come back with a quarter of the bandwidth (``dram_bytes_per_cycle=RECPIPE_DRAM_BYTES_PER_CYCLE / 4``).
* **Units of bandwidth**: the artifact's "GB/s" are GiB/s (``bytes / (GB * 2**30 / 10**9)`` ns): its 32 GB/s are
  274.9 bytes per 8 ns cycle (:data:`RECPIPE_DRAM_BYTES_PER_CYCLE`). By default the bandwidth and latency are the
  configuration's (``mem_bytes_per_cycle``, ``mem_latency_cycles``), so the estimate is for the memory the chip
  has: ``paper``'s 256 bytes a cycle are 32e9 bytes/s, 7% less than RecPipe's, and its RM-large query comes out
  at 2.107 ms rather than 2.091 ms.
* **Non-square sub-arrays** (a split in two): the compute term takes ``R`` for the input dimension and ``C`` for
  the output dimension, which for RecPipe's square arrays is its formula.
* **Top MLP input**: the artifact prepends ``emb_dim * (26 + 1)`` to the top MLP, the width of the bottom output
  and the pooled vectors concatenated, although RecPipe's models use the dot interaction (864 inputs for RM-large
  where the dot interaction gives 383). Kept for ``dot`` models, as ``emb_dim * (tables + 1)``; a model of another
  interaction (a DeepRecSys model, which the artifact never ran) gets its own top input width
  (:attr:`~rpaccel.host.models.ModelSpec.interaction_width`) and its other layers (NCF's final layer, task
  towers) as top layers. Attention and recurrent work, which are not layers, are left out.
* **Lookups**: ``tables * pooling`` of the model (26 for RecPipe's Kaggle models, the artifact's constant).
* **Stage sizes**: a stage keeps at most the items it scores, and scores at most what the stage before kept.

What the artifact has that is not here: the flash tier (its DRAM miss rate is fixed at 0, so the term is 0), its
"online" embedding mode (an LRU simulation of the L1 and DRAM caches, not used by its sweeps), the host-side sort
of a baseline without an on-chip sorter (RecPipeAccel sorts on chip), and the ``reduction_cycles`` it computes
per layer but does not add.
"""

import math
from dataclasses import dataclass

from rpaccel.host.models import ModelSpec, get_model

__all__ = ["RECPIPE_BYTES_PER_VALUE", "RECPIPE_CLOCK_NS", "RECPIPE_DRAM_BYTES_PER_CYCLE", "RECPIPE_L1_MISS_RATE",
           "RECPIPE_SRAM_BYTES_PER_CYCLE", "RECPIPE_WEIGHT_SRAM_BYTES", "TERMS", "RecPipeEstimate", "RecPipeStage",
           "StageEstimate", "recpipe_query"]

#: RecPipe's accelerator clock period in ns (125 MHz).
RECPIPE_CLOCK_NS = 8.0
#: RecPipe's DRAM bandwidth, "32 GB/s" of 2**30 bytes, in bytes per cycle of its 8 ns clock.
RECPIPE_DRAM_BYTES_PER_CYCLE = 32 * 2**30 / 10**9 * RECPIPE_CLOCK_NS
#: RecPipe's fixed L1 (embedding cache) miss rate.
RECPIPE_L1_MISS_RATE = 0.50
#: Bytes per embedding value, weight and score in RecPipe's model (float32).
RECPIPE_BYTES_PER_VALUE = 4
#: Bytes per cycle of RecPipe's on-chip SRAMs (the embedding cache's hits and the sorter's words).
RECPIPE_SRAM_BYTES_PER_CYCLE = 64
#: Bytes of RecPipe's weight SRAM per engine: a layer's weights beyond it load in several slices.
RECPIPE_WEIGHT_SRAM_BYTES = 1_000_000

#: The terms of a stage's estimate, in the order RecPipe adds them.
TERMS = ("pcie_in", "embedding", "bottom", "top", "sort", "pcie_out")

# RecPipe's PCIe characterisation (Cascade Lake to T4), in ms: a fixed latency and a slope per 4,096 items.
_PCIE_LATENCY_MS = 5.0
_PCIE_IN_MS_PER_4096 = 12.0
_PCIE_OUT_MS_PER_4096 = 5.0


@dataclass(frozen=True)
class RecPipeStage:
    """One stage of a pipeline: ``model`` scores ``items`` items and keeps the best ``k``.

    Parameters
    ----------
    model : ModelSpec or str
        The stage's model, or its name in the zoo (:func:`rpaccel.host.models.get_model`).
    items : int
        Items the stage scores.
    k : int
        Items it keeps (at most ``items``).
    """

    model: object
    items: int
    k: int


@dataclass(frozen=True)
class StageEstimate:
    """RecPipe's estimate of one stage, term by term, in cycles (floats, as RecPipe's model computes them).

    Attributes
    ----------
    model : str
        The model's name.
    items, k : int
        Items scored and kept.
    split : int
        Sub-arrays the array is split into; the stage runs on one of them.
    rows, cols : int
        The sub-array's shape.
    engines : int
        Sub-arrays the stage gets, ``floor(split / stages)`` (0 where the pipeline has more stages than the split
        has sub-arrays, a configuration RecPipe's sweeps never make). Each takes whole queries.
    dram_bytes_per_cycle : float
        The engine's share of the DRAM bandwidth.
    pcie_in, embedding, bottom, top, sort, pcie_out : float
        The terms (:data:`TERMS`), in cycles.
    weight_load : float
        Cycles of ``bottom`` and ``top`` spent reloading weights from DRAM.
    """

    model: str
    items: int
    k: int
    split: int
    rows: int
    cols: int
    engines: int
    dram_bytes_per_cycle: float
    pcie_in: float
    embedding: float
    bottom: float
    top: float
    sort: float
    pcie_out: float
    weight_load: float

    @property
    def cycles(self):
        """The stage's service time in cycles: the sum of its terms."""
        return sum(self.terms().values())

    def terms(self):
        """``{term: cycles}`` in the order of :data:`TERMS`."""
        return {term: getattr(self, term) for term in TERMS}


@dataclass(frozen=True)
class RecPipeEstimate:
    """RecPipe's estimate of one query's service time on a pipeline (:func:`recpipe_query`).

    Attributes
    ----------
    config : str
        Name of the configuration.
    clock_ns : float
        Clock period the cycles are counted at.
    fix_pcie, fix_sort : bool
        Whether the PCIe and sort terms were corrected (see :mod:`rpaccel.sim.model.recpipe`).
    stages : tuple of StageEstimate
        The stages, in order.
    """

    config: str
    clock_ns: float
    fix_pcie: bool
    fix_sort: bool
    stages: tuple

    @property
    def cycles(self):
        """The query's service time in cycles: the sum over its stages."""
        return sum(stage.cycles for stage in self.stages)

    @property
    def seconds(self):
        """The query's service time in seconds."""
        return self.cycles * self.clock_ns / 1e9

    @property
    def ms(self):
        """The query's service time in milliseconds."""
        return self.cycles * self.clock_ns / 1e6

    def terms(self):
        """``{term: cycles}`` summed over the stages, in the order of :data:`TERMS`."""
        return {term: sum(getattr(stage, term) for stage in self.stages) for term in TERMS}

    def describe(self):
        """A dict of the estimate, every stage and its terms (for reports and ``--json`` output)."""
        return {"config": self.config, "clock_ns": self.clock_ns, "fix_pcie": self.fix_pcie,
                "fix_sort": self.fix_sort, "cycles": self.cycles, "ms": self.ms, "terms": self.terms(),
                "stages": [{"model": s.model, "items": s.items, "k": s.k, "split": s.split,
                            "array": [s.rows, s.cols], "engines": s.engines,
                            "dram_bytes_per_cycle": s.dram_bytes_per_cycle, "cycles": s.cycles,
                            "weight_load": s.weight_load, "terms": s.terms()} for s in self.stages]}


def _check_count(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def _check_positive(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")


def _stages(stages):
    """``stages`` as a tuple of (ModelSpec, items, k), checked."""
    if isinstance(stages, (str, bytes)) or not hasattr(stages, "__iter__"):
        raise ValueError(f"stages must be a sequence of RecPipeStage, not {stages!r}")
    stages = tuple(stages)
    if not stages:
        raise ValueError("stages is empty: a pipeline needs at least one stage")
    out = []
    for number, stage in enumerate(stages):
        if not isinstance(stage, RecPipeStage):
            raise ValueError(f"stage {number} must be a RecPipeStage, not {stage!r}")
        model = get_model(stage.model) if isinstance(stage.model, str) else stage.model
        if not isinstance(model, ModelSpec):
            raise ValueError(f"stage {number}: model must be a ModelSpec or a zoo name, not {stage.model!r}")
        _check_count(f"stage {number} items", stage.items)
        _check_count(f"stage {number} k", stage.k)
        if stage.items < stage.k:
            raise ValueError(f"stage {number} keeps k={stage.k} of items={stage.items}: k must be at most items")
        if out and stage.items > out[-1][2]:
            raise ValueError(f"stage {number} scores items={stage.items}, more than stage {number - 1} keeps "
                             f"(k={out[-1][2]})")
        out.append((model, stage.items, stage.k))
    return tuple(out)


def _splits(config, split, count):
    """Per-stage sub-array counts from ``split`` (one for every stage, or one per stage), checked."""
    splits = tuple(split) if isinstance(split, (tuple, list)) else (split,) * count
    if len(splits) != count:
        raise ValueError(f"split gives {len(splits)} sub-array counts for {count} stages: {split!r}")
    for n in splits:
        if isinstance(n, bool) or n not in config.splits:
            raise ValueError(f"split {n!r} is not one of {config.name}'s splits {config.splits}")
    return splits


def _layers(model):
    """``(bottom, top)``: the model's layers as (K, N) pairs, the top MLP's input as RecPipe's model takes it."""
    bottom = [(k, n) for name, k, n, _ in model.layers() if name.startswith("bottom")]
    top = [(k, n) for name, k, n, _ in model.layers() if not name.startswith("bottom")]
    if model.interaction == "dot":
        top[0] = (model.emb_dim * (model.num_tables + 1), top[0][1])
    return bottom, top


def recpipe_query(config, stages, *, split=1, clock_ns=RECPIPE_CLOCK_NS, dram_bytes_per_cycle=None,
                  dram_latency_cycles=None, l1_miss_rate=RECPIPE_L1_MISS_RATE, bytes_per_value=RECPIPE_BYTES_PER_VALUE,
                  sram_bytes_per_cycle=RECPIPE_SRAM_BYTES_PER_CYCLE, weight_sram_bytes=RECPIPE_WEIGHT_SRAM_BYTES,
                  pcie_out_k=False, fix_pcie=False, fix_sort=False):
    """RecPipe's estimate of one query's service time on ``config``: its analytical model, term by term.

    See :mod:`rpaccel.sim.model.recpipe` for the formulas and the choices made where the artifact leaves one.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        The accelerator: its array shape and splits, and (by default) its memory's bandwidth and latency.
    stages : sequence of RecPipeStage
        The pipeline, first stage first.
    split : int or sequence of int
        Sub-arrays the array is split into (one of ``config.splits``), for every stage or one per stage (RecPipe's
        sweeps mix them, e.g. 4 x 64 x 64 for the front stage and 16 x 32 x 32 for the back). Default 1: the whole
        array (RecPipe's baseline).
    clock_ns : float
        Clock period in ns the cycles are counted at (RecPipe's 8 ns; ``config.clock_period_ns`` for the chip's).
        It sets the seconds of the result and the cycles of the PCIe and sort terms.
    dram_bytes_per_cycle : float, optional
        Bandwidth of the whole off-chip memory, shared equally by the split's sub-arrays. Default
        ``config.mem_bytes_per_cycle``; :data:`RECPIPE_DRAM_BYTES_PER_CYCLE` is RecPipe's.
    dram_latency_cycles : float, optional
        Latency of a DRAM access (an embedding gather or a layer's weight slice). Default
        ``config.mem_latency_cycles`` (RecPipe's is 100).
    l1_miss_rate : float
        Fraction of embedding bytes that miss the on-chip cache (RecPipe's fixed 0.50).
    bytes_per_value : int
        Bytes of an embedding value, a weight and a score (RecPipe's float32: 4).
    sram_bytes_per_cycle : float
        Bytes per cycle of the on-chip SRAMs (RecPipe's 64).
    weight_sram_bytes : int
        Bytes of an engine's weight SRAM (RecPipe's 1,000,000).
    pcie_out_k : bool
        Whether the output PCIe term carries the stage's ``k`` items, as the formula's ``top_n`` allows. RecPipe's
        sweeps pass ``top_n = 0``: only the fixed latency (default).
    fix_pcie : bool
        Count the PCIe terms' milliseconds as milliseconds (``ms * 1e6 / clock_ns`` cycles) rather than RecPipe's
        ``ms * 1000`` cycles.
    fix_sort : bool
        Count the sort as ``ceil(items / (sram_bytes_per_cycle / bytes_per_value))`` cycles rather than RecPipe's
        ``floor(floor(items / (sram_bytes_per_cycle / bytes_per_value)) / clock_ns)``.

    Returns
    -------
    RecPipeEstimate

    Raises
    ------
    ValueError
        If the pipeline is empty, a stage is not a :class:`RecPipeStage`, names no zoo model, keeps more items
        than it scores or scores more than the stage before kept, a split is not one of ``config.splits`` or the
        splits are not one per stage, or a parameter is not a positive number (the miss rate: not in [0, 1]).
    """
    pipeline = _stages(stages)
    splits = _splits(config, split, len(pipeline))
    bandwidth = config.mem_bytes_per_cycle if dram_bytes_per_cycle is None else dram_bytes_per_cycle
    latency = config.mem_latency_cycles if dram_latency_cycles is None else dram_latency_cycles
    for name, value in (("clock_ns", clock_ns), ("dram_bytes_per_cycle", bandwidth),
                        ("sram_bytes_per_cycle", sram_bytes_per_cycle), ("bytes_per_value", bytes_per_value),
                        ("weight_sram_bytes", weight_sram_bytes)):
        _check_positive(name, value)
    if not isinstance(latency, (int, float)) or isinstance(latency, bool) or latency < 0:
        raise ValueError(f"dram_latency_cycles must be a non-negative number, not {latency!r}")
    if not isinstance(l1_miss_rate, (int, float)) or isinstance(l1_miss_rate, bool) or not 0 <= l1_miss_rate <= 1:
        raise ValueError(f"l1_miss_rate must be a number in [0, 1], not {l1_miss_rate!r}")

    def pcie(ms):
        return ms * 1e6 / clock_ns if fix_pcie else ms * 1000

    def mlp(layers, items, rows, cols, engine_bandwidth):
        """(cycles, of which weight loading) of ``layers`` on a rows x cols sub-array."""
        total = load_total = 0.0
        for k, n in layers:
            weight_bytes = bytes_per_value * k * n
            slices = math.ceil(weight_bytes / weight_sram_bytes)
            load = (latency + min(weight_sram_bytes, weight_bytes) / engine_bandwidth) * slices
            tiles = math.ceil(k / rows) * math.ceil(n / cols)
            total += load + (min(n, cols) + min(k, rows) + items) * tiles
            load_total += load
        return total, load_total

    estimates = []
    for (model, items, k), n in zip(pipeline, splits):
        rows, cols = config.subarray_shape(n)
        engine_bandwidth = bandwidth / n
        emb_bytes = items * model.embedding_bytes_per_item(bytes_per_value)
        embedding = (latency + emb_bytes * l1_miss_rate / engine_bandwidth
                     + emb_bytes * (1 - l1_miss_rate) / sram_bytes_per_cycle)
        bottom_layers, top_layers = _layers(model)
        bottom, bottom_load = mlp(bottom_layers, items, rows, cols, engine_bandwidth)
        top, top_load = mlp(top_layers, items, rows, cols, engine_bandwidth)
        per_cycle = sram_bytes_per_cycle / bytes_per_value
        sort = math.ceil(items / per_cycle) if fix_sort else math.floor(math.floor(items / per_cycle) / clock_ns)
        estimates.append(StageEstimate(
            model=model.name, items=items, k=k, split=n, rows=rows, cols=cols, engines=n // len(pipeline),
            dram_bytes_per_cycle=engine_bandwidth,
            pcie_in=pcie(_PCIE_LATENCY_MS + _PCIE_IN_MS_PER_4096 / 4096 * items), embedding=embedding,
            bottom=bottom, top=top, sort=sort,
            pcie_out=pcie(_PCIE_LATENCY_MS + _PCIE_OUT_MS_PER_4096 / 4096 * (k if pcie_out_k else 0)),
            weight_load=bottom_load + top_load))
    return RecPipeEstimate(config=config.name, clock_ns=clock_ns, fix_pcie=bool(fix_pcie), fix_sort=bool(fix_sort),
                           stages=tuple(estimates))
