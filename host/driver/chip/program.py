"""The chip's query compiler: models loaded on chip, pipelines of stages, and the programs that run them.

A :class:`ChipSetup` places models on a chip: their embedding tables (one :class:`~rpaccel.embedding.
EmbeddingLayout` of every model's tables, a model's tables on consecutive chip tables), their weights per split
(:func:`~rpaccel.host.driver.mlp.layout_weights`, staged in memory and loaded once with WEIGHTS, or streamed: see
below) and the candidate records of each query (:meth:`ChipSetup.add_query`), all in one
:class:`~.memory.MemoryImage`.

:func:`compile_queries` turns a pipeline of :class:`Stage` s and a list of queries into a :class:`Program` under a
:class:`Schedule`:

* ``"rpaccel"``: split ``n``, stage ``s`` on lane ``s % n`` and top-k unit ``s % units`` (or, with a lane map
  ``Schedule.lanes``, stage ``s`` of query ``q`` on lane ``lanes[s][q % len(lanes[s])]``, a unit per stage and
  lane); each stage runs in sub-batches of at most ``S`` candidates, the top-k unit keeping a running top-k; a later
  stage fetches the kept result with ``FETCH SURVIVORS`` (waiting for it, the last fetch releasing it), so the whole
  program runs with no host step.
* ``"baseline"``: split 1, everything on lane 0, one sub-batch after another, every logit to the host (``SCORE``
  dest RSP); a later stage fetches a ``LIST`` the host writes after sorting the previous stage's logits, so each
  stage of each query is a :class:`Step` of its own.

Per sub-batch a lane gets a FETCH, an INPUT of the dense words, the bottom MLP's LAYERs (the last to the joiner),
an INPUT of the interaction words, the top MLP's LAYERs (the last, raw, to the score sequencer) and a SCORE. The
lane's activation memory holds two input regions for each MLP (alternating per sub-batch) and two hidden regions
(alternating per layer, as :func:`~rpaccel.host.driver.mlp.plan_lane` lays out one MLP); an INPUT waits until the
layer that last read its region has finished, every layer until the one before it has. A model without a bottom
MLP (Wide & Deep) puts its dense words at the start of the top MLP's input region and the interaction words after
them, and runs a stub bottom layer for the joiner's first vector (:func:`chip_mlps`). Counters, result numbers
and regions carry on from query to query. When every stage has a lane and a unit of its own (and the tables are
resident), the program interleaves stage ``s`` of query ``q`` with stage ``s - 1`` of query ``q + 1`` (which depend
on each other only through results of earlier queries; with a lane map, waves of several queries per stage, see
:class:`Schedule`), so the fetcher and the weight loader, which take their commands in program order, serve the
lanes in turn; the joiner serves each lane's jobs on their own. With
``Schedule.balance`` the stages' layers are placed in the order the lanes are estimated to reach them (per layer or
streamed part, ``ktiles x ntiles x (items + rows + cols)`` cycles of the lane's sub-array, or the words its WEIGHTS
copies if more): a lane with cheap sub-batches runs several between two of an expensive stage, and its WEIGHTS go
between the other lane's, which wait for the layers that free their slots.

Weights that do not fit the weight buffer stream from memory (:meth:`ChipSetup.weights`, a :class:`WeightPlan`):
the resident models' weights are loaded once from word 0, the rest of the buffer is divided into a ring of slots
for every lane that runs a streamed model, and each streamed layer (or part of a layer larger than a slot, a LAYER
per part) is staged in memory on its own. Before each streamed LAYER the lane's program has a WEIGHTS copying it
into the ring's next slot, waiting (on the lane) for the layer that last read the slot; the LAYER waits for that
WEIGHTS. With two slots or more, layer j + 1's weights load while layer j computes. Every WEIGHTS waits only on
a layer before it in the program, so the weight loader, which runs WEIGHTS in program order for every lane, never
holds a WEIGHTS that an earlier command needs behind one that waits on a later command.

:func:`expected_responses` is the golden model of a program: what the chip must answer, computed with
:func:`rpaccel.host.reference.run` (:func:`chip_logits`) and :func:`rpaccel.numeric.topk`.
"""

from dataclasses import dataclass, field, replace
from math import gcd

import numpy as np
from amaranth.hdl import Shape

from ....embedding import EmbeddingLayout, LayoutError, TableSpec
from ....numeric import topk
from ....rtl.accel.isa import ActSource, FetchSource, Opcode, OutDest, ResponseKind, ScoreDest
from ....rtl.accel.join import absorbs
from ....rtl.interaction import MODES
from ....rtl.mlp import WAIT_BITS, Op
from ...reference import Layer, MLPError, check_inputs, check_mlp, run
from ..interaction import output_words
from ..mlp import layout_weights, mlp_command, words_per_item
from .encoding import ChipEncoder, Responses, geometry_of
from .memory import (
    MemoryImage,
    RecordSet,
    encode_list,
    encode_records,
    list_lines,
    stage_weights,
    table_dim,
    table_rows,
)

__all__ = ["ChipSetup", "CompileError", "Expected", "Program", "Query", "Schedule", "Stage", "Step", "WeightPlan",
           "chip_logits", "chip_mlps", "compile_queries", "expected_responses"]

MOD = 1 << WAIT_BITS

#: How many of the latest WEIGHTS before it a LANE command may leave unwaited (other lanes' streamed layers). Its
#: wait is then at least the count before it less this, so it still looks met (modulo 256, within half the range)
#: while the loader has completed fewer than 128 - WEIGHTS_LAG WEIGHTS that come after it in the program.
WEIGHTS_LAG = 64

#: The most slots in a lane's ring: how many of its streamed layers the loader may copy ahead of the lane (more
#: would hide no more latency, and would let the loader's count run further ahead of the lanes' waits).
MAX_SLOTS = 8


class CompileError(ValueError):
    """A pipeline, schedule or model the compiler cannot map onto the chip (the message says which and why)."""


def _ceil_div(a, b):
    return -(-a // b)


def _record(op, tag, arg=None):
    return {"op": op, "tag": tag, "arg": arg or {}}


# Models on chip ------------------------------------------------------------------------------------------------

def chip_mlps(config, qmodel):
    """``(bottom layers, top layers)`` of ``qmodel`` as the chip runs them (lists of
    :class:`~rpaccel.host.reference.Layer`).

    A model with a bottom MLP runs its MLPs as they are. A model without one (Wide & Deep: the dense inputs enter
    the ``cat`` interaction as they are) sends its dense words past the joiner: its bottom INPUT puts them at the
    start of the top MLP's input region and the top INPUT puts the interaction words after them, so the first top
    layer reads ``[dense inputs, zeros to a whole word of the chip's rows, the joiner's first vector, the pooled
    vectors]``. That first vector, which the joiner takes from a bottom MLP, comes from a stub: one layer of one
    input and ``emb_dim`` outputs, weights and biases zero (a zero vector). The first top layer gets zero weight
    rows for the padding and for the stub's vector, so its accumulators, and every logit, are the reference's
    exactly (the added rows add zero whatever the words hold, and nothing to the accumulator's bound).

    A multi-task model runs task 0's tower after its top MLP: the chip ranks by task 0's logit
    (:func:`chip_logits`).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig or rpaccel.rtl.accel.isa.ChipGeometry
    qmodel : rpaccel.host.quant.QuantModel
    """
    spec, mlps, rows = qmodel.spec, qmodel.mlps(), geometry_of(config).rows
    bottom, top = mlps["bottom"], mlps["top"] + (mlps["task0"] if spec.tasks else [])
    if not bottom:
        d, first = spec.emb_dim, top[0]
        bottom = [Layer(np.zeros((1, d), dtype=first.weights.dtype), np.zeros(d, dtype=np.int64), m=1, s=0,
                        name="bottom-stub")]
        dense = _ceil_div(spec.dense, rows) * rows
        weights = np.zeros((dense + d + first.shape[0] - spec.dense, first.shape[1]), dtype=first.weights.dtype)
        weights[:spec.dense] = first.weights[:spec.dense]
        weights[dense + d:] = first.weights[spec.dense:]
        top = [replace(first, weights=weights), *top[1:]]
    return bottom, top


def chip_logits(qmodel, dense_q, ids):
    """The logits the chip ranks ``qmodel``'s candidates by: :func:`rpaccel.host.reference.run`'s, task 0's of a
    multi-task model (int64, ``(n,)``)."""
    logits = run(qmodel, dense_q, ids)
    return logits[:, 0] if qmodel.spec.tasks else logits


@dataclass(frozen=True)
class Query:
    """One query's candidates: a record set per model in memory, and the inputs they were made from.

    Attributes
    ----------
    count : int
        Candidates.
    records : dict
        ``{model number: RecordSet}``.
    inputs : dict
        ``{model number: (dense_q, ids)}`` (checked, ``ids`` ``(n, T, P)``).
    """

    count: int
    records: dict
    inputs: dict


@dataclass(frozen=True)
class StreamedPart:
    """A streamed layer's n-tiles ``first .. first + ntiles - 1``: ``words`` weight words staged from memory line
    ``addr`` (:func:`~rpaccel.host.driver.mlp.layout_weights` of those columns alone), copied by one WEIGHTS and
    computed by one LAYER."""

    addr: int
    words: int
    first: int
    ntiles: int


@dataclass(frozen=True)
class WeightPlan:
    """The weight buffer at one split: resident models loaded once, streamed models' layers copied per use.

    Attributes
    ----------
    image : rpaccel.host.driver.mlp.WeightImage
        The resident models' MLPs from word 0, keys ``(model number, "bottom" or "top")``.
    addr : int or None
        The memory line the image is staged at (``None``: no model is resident).
    region : int
        The first word of the streaming region (the rest of the buffer), which the compiler divides into rings of
        slots of ``slot_words``, one ring per lane that runs a streamed model.
    slot_words : int
        The largest streamed part's words (0 if nothing streams).
    staged : dict
        ``{(model number, "bottom" or "top"): ((StreamedPart, ...) per layer)}``: each streamed layer's parts
        (one part, the whole layer, unless it is larger than a slot).
    """

    image: object
    addr: object
    region: int
    slot_words: int
    staged: dict


class ChipSetup:
    """Models loaded on a chip: their tables, weights and queries' candidate records in one memory image.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig or rpaccel.rtl.accel.isa.ChipGeometry
    models : sequence of rpaccel.host.quant.QuantModel
    static_rows : dict, optional
        ``{model number: rows per table}`` held by the static cache (the hottest IDs are the lowest; default none).
    streamed : collection of int, optional
        Model numbers whose weights stream from memory at every split (default: none if every model's weights fit
        the weight buffer, otherwise the models that do not fit next to the others, :meth:`weights`).

    Attributes
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    models : list of QuantModel
    resident : bool
        Whether every model's tables are configured at once (they fit ``emb_tables``): model ``i``'s tables are
        chip tables ``table_base[i]`` onwards. Otherwise every model's tables are chip tables 0 onwards, and the
        compiler configures a model's tables (EMB CONFIG, and PRELOAD of static rows) before a stage that needs
        them while another model's are configured; the tables stay in memory, one model's after the other's.
    layouts : list of rpaccel.embedding.EmbeddingLayout
        The layout each model's tables are configured with (one layout shared by every model if
        :attr:`resident`).
    table_base : list of int
        The chip table of each model's table 0.
    streamed : frozenset or None
        The ``streamed`` given.
    memory : MemoryImage
    queries : list of Query

    Raises
    ------
    CompileError
        If a model cannot run on the chip (naming the model and why), or the tables do not fit.
    """

    def __init__(self, config, models, *, static_rows=None, streamed=None):
        self.geometry = g = geometry_of(config)
        self.models = list(models)
        if not self.models:
            raise CompileError("A chip setup needs at least one model")
        if streamed is not None:
            streamed = frozenset(streamed)
            if not streamed <= set(range(len(self.models))):
                raise CompileError(f"Streamed models {sorted(streamed)} must be model numbers below "
                                   f"{len(self.models)}")
        self.streamed = streamed
        specs, self.dims = [], []
        for number, qmodel in enumerate(self.models):
            self._check_model(qmodel)
            spec = qmodel.spec
            dim = table_dim(g, spec.emb_dim)
            static = (static_rows or {}).get(number, (0,) * spec.num_tables)
            self.dims.append(dim)
            specs.append([TableSpec(rows, dim, int(static[t]), int(qmodel.pool_m[t]), int(qmodel.pool_s[t]))
                          for t, rows in enumerate(spec.tables)])
        self.resident = sum(map(len, specs)) <= g.emb.tables
        try:
            if self.resident:
                layout = EmbeddingLayout(g.emb, [table for model in specs for table in model])
                self.layouts = [layout] * len(specs)
                self.table_base = np.cumsum([0] + [len(model) for model in specs[:-1]]).tolist()
                top = layout.mem_lines
            else:
                self.layouts, self.table_base, top = [], [0] * len(specs), 0
                for model in specs:
                    layout = EmbeddingLayout(g.emb, model)
                    # After the previous model's tables (whole multiples of the banks, so every base stays aligned).
                    layout.mem_base = [base + top for base in layout.mem_base]
                    top += layout.mem_lines
                    self.layouts.append(layout)
        except LayoutError as error:
            raise CompileError(f"The models' tables do not fit the chip: {error}") from None
        self.memory = MemoryImage(g)
        for number, qmodel in enumerate(self.models):
            for t in range(qmodel.spec.num_tables):
                chip_table = self.table_base[number] + t
                rows = table_rows(qmodel, t, self.dims[number])
                self.memory.write(self.layouts[number].mem_base[chip_table],
                                  rows.view(np.uint8).reshape(-1, g.line_bytes))
        self.memory.allocate(top, what="embedding tables")
        self.queries = []
        self._weights = {}
        self._mlps = [chip_mlps(g, qmodel) for qmodel in self.models]

    def _check_model(self, qmodel):
        g, spec = self.geometry, qmodel.spec
        why = None
        if spec.interaction not in MODES:
            why = f"interaction {spec.interaction!r} is not one of the chip's {MODES}"
        elif not spec.bottom and not spec.dense:
            why = "it has neither a bottom MLP nor dense inputs (a sub-batch starts with an INPUT of dense words)"
        elif spec.bottom and spec.bottom[-1] != spec.emb_dim:
            why = f"the bottom output ({spec.bottom[-1]}) must be as wide as the embeddings ({spec.emb_dim})"
        elif spec.num_tables > g.config.max_tables:
            why = f"{spec.num_tables} tables exceed the {g.config.max_tables} of a model (max_tables)"
        elif spec.emb_dim > g.max_dim:
            why = f"embedding dimension {spec.emb_dim} exceeds max_emb_dim {g.max_dim}"
        elif spec.pooling > g.emb.max_pooling:
            why = f"pooling {spec.pooling} exceeds max_pooling {g.emb.max_pooling}"
        else:
            fetch = g.fetch_layout()
            for field, need, unit in (("dense_words", _ceil_div(spec.dense, g.rows), f"words of {g.rows}"),
                                      ("dense_lines", _ceil_div(spec.dense, g.line_bytes), "memory lines")):
                most = (1 << Shape.cast(fetch[field].shape).width) - 1
                if need > most:
                    why = (f"its {spec.dense} dense features take {need} {unit}, and a FETCH's {field} holds "
                           f"at most {most}")
                    break
        if why:
            raise CompileError(f"Model {spec.name} cannot run on {g.config.name}: {why}")

    def number(self, qmodel):
        """The number of ``qmodel`` in :attr:`models`."""
        for number, model in enumerate(self.models):
            if model is qmodel:
                return number
        raise CompileError(f"Model {qmodel.spec.name} is not loaded on this chip setup")

    def mlps(self, number):
        """``(bottom layers, top layers)`` of model ``number`` as the chip runs them (:func:`chip_mlps`)."""
        return self._mlps[number]

    def weights(self, split, lanes=None):
        """The :class:`WeightPlan` of ``split`` with slots for ``lanes`` streaming lanes, made (and staged in
        memory) once per split and lane count.

        Every model is resident (laid out from word 0, loaded once) if all fit the weight buffer. Otherwise the
        models in :attr:`streamed` (default: in model order, each that does not fit next to the resident ones
        and two slots of the others' largest layer) stream from memory: each layer is staged on its own, so it is
        one contiguous copy into a slot. A layer larger than half the room left is staged in parts of whole
        n-tiles (each part a LAYER of its own, starting on a whole activation word), the last layer of an MLP
        (whose output is a stream) excepted; with several lanes (``lanes``; default one per streamed model, up to
        the split) the room holds two slots for each. The resident image is the same for every ``lanes``.

        Raises
        ------
        CompileError
            If the resident models leave no room for two slots of a streamed layer's part (naming the sizes).
        """
        if (split, lanes) in self._weights:
            return self._weights[split, lanes]
        g = self.geometry
        engine, words, shape = g.engine, g.engine.weight_words, g.engine.splits[split]
        layers = {number: dict(zip(("bottom", "top"), self.mlps(number))) for number in range(len(self.models))}
        for number in layers:
            for mlp in layers[number].values():
                try:
                    check_mlp(mlp)
                except MLPError as error:
                    raise CompileError(f"{self.models[number].spec.name}: {error}") from None

        def layer_words(layer):
            k, n = layer.shape
            return _ceil_div(n, shape.cols) * (shape.bias_words + _ceil_div(k, shape.rows) * shape.tile_words)

        def size(numbers):
            return sum(layer_words(layer) for number in numbers for mlp in layers[number].values() for layer in mlp)

        def slot(numbers):
            return max((layer_words(layer) for number in numbers for mlp in layers[number].values()
                        for layer in mlp), default=0)

        every = range(len(self.models))
        if self.streamed is not None:
            streamed = sorted(self.streamed)
        elif size(every) <= words:
            streamed = []
        else:
            resident = []
            for number in every:
                rest = [other for other in every if other not in resident and other != number]
                if size([*resident, number]) + 2 * slot(rest) <= words:
                    resident.append(number)
            streamed = [number for number in every if number not in resident]
        resident = [number for number in every if number not in streamed]
        room = words - size(resident)
        if room < 0:
            raise CompileError(f"The resident weights at split {split} need {size(resident)} words; the weight "
                               f"buffer has {words} (weight_buffer_words)")
        image = layout_weights(engine, split, {(number, name): mlp for number in resident
                                               for name, mlp in layers[number].items()})
        addr = (self.memory.place(stage_weights(g, image.words), what=f"the weights of split {split}")
                if len(image.words) else None)
        # Two slots for every lane that may run a streamed model.
        cap = min(slot(streamed), room // (2 * max(min(split, len(streamed)) if lanes is None else lanes, 1)))
        # Parts start on whole activation words: a multiple of `align` n-tiles.
        align = shape.rows // gcd(shape.rows, shape.cols)
        staged = {}
        for number in streamed:
            name_of = self.models[number].spec.name
            for name, mlp in layers[number].items():
                parts_of = []
                for index, layer in enumerate(mlp):
                    k, n = layer.shape
                    ntile_words = shape.bias_words + _ceil_div(k, shape.rows) * shape.tile_words
                    ntiles = _ceil_div(n, shape.cols)
                    per_part = min(ntiles, cap // ntile_words // align * align)
                    if per_part < (ntiles if index == len(mlp) - 1 else min(ntiles, align)):
                        raise CompileError(
                            f"{name_of}'s {name} layer {index} at split {split} cannot stream: "
                            f"{ntiles if index == len(mlp) - 1 else min(ntiles, align)} n-tiles of {ntile_words} "
                            f"words each in a slot, and the {room} words the resident weights leave hold slots "
                            f"of {cap}" + ("" if lanes is None else f" (two for each of {lanes} streaming lanes)"))
                    parts = []
                    for first in range(0, ntiles, per_part):
                        cols = slice(first * shape.cols, min((first + per_part) * shape.cols, n))
                        part = replace(layer, weights=layer.weights[:, cols], bias=layer.bias[cols])
                        laid = layout_weights(engine, split, {0: [part]})
                        parts.append(StreamedPart(
                            addr=self.memory.place(stage_weights(g, laid.words),
                                                   what=f"the weights of {name_of} at split {split}"),
                            words=len(laid.words), first=first, ntiles=_ceil_div(cols.stop - cols.start, shape.cols)))
                    parts_of.append(tuple(parts))
                staged[number, name] = tuple(parts_of)
        slot_words = max((part.words for layers_ in staged.values() for parts in layers_ for part in parts),
                         default=0)
        plan = WeightPlan(image=image, addr=addr, region=len(image.words), slot_words=slot_words, staged=staged)
        self._weights[split, lanes] = plan
        return plan

    def add_query(self, inputs):
        """Place a query's candidates in memory: ``inputs`` is ``{model number or QuantModel: (dense_q, ids)}``
        with one entry for every model a stage of the pipeline runs, all with the same number of candidates.

        Returns
        -------
        Query
        """
        records, checked, count = {}, {}, None
        for key, (dense_q, ids) in inputs.items():
            number = key if isinstance(key, int) else self.number(key)
            qmodel = self.models[number]
            dense_q, ids = check_inputs(qmodel, dense_q, ids)
            if count is not None and len(dense_q) != count:
                raise CompileError(f"A query's candidates must be as many for every model: {count} and "
                                   f"{len(dense_q)} ({qmodel.spec.name})")
            count = len(dense_q)
            if not 1 <= count <= 1 << 16:
                raise CompileError(f"A query holds 1 to 65536 candidates, not {count}")
            lines, dense_lines, stride = encode_records(self.geometry, dense_q, ids,
                                                        table_base=self.table_base[number])
            base = self.memory.place(lines, what=f"the records of query {len(self.queries)}")
            records[number] = RecordSet(base=base, stride=stride, count=count, dense_lines=dense_lines,
                                        dense_words=_ceil_div(qmodel.spec.dense, self.geometry.rows),
                                        dense=qmodel.spec.dense, table_base=self.table_base[number],
                                        tables=ids.shape[1], pooling=ids.shape[2])
            checked[number] = (dense_q, ids)
        query = Query(count=count, records=records, inputs=checked)
        self.queries.append(query)
        return query

    def load_words(self, encoder=None):
        """MEM_WRITE words of the memory image (tables, weights staged so far, records)."""
        return self.memory.commands(encoder or ChipEncoder(self.geometry))

    def table_records(self, number=None, tag=0):
        """EMB CONFIG (and PRELOAD of the tables with static rows) of every table (:attr:`resident`) or of model
        ``number``'s."""
        layout = self.layouts[0 if number is None else number]
        unit = ChipEncoder(self.geometry).unit
        columns, count = unit.configure(layout)
        config = columns["arg"]["config"]
        records = [_record(Opcode.EMB, tag, {"op": columns["op"], "table": t, "arg": {"config": {
            name: int(values[t]) for name, values in config.items()}}}) for t in range(count)]
        for t, spec in enumerate(layout.tables):
            if spec.static_rows:
                columns, _ = unit.preload(t)
                records.append(_record(Opcode.EMB, tag, {"op": columns["op"], "table": t,
                                                         "arg": {"counters": {"clear": 0}}}))
        return records

    def setup_records(self, split, tag=0):
        """Command records that prepare the chip: SPLIT, the tables' EMB CONFIG and PRELOAD (if
        :attr:`resident`) and the WEIGHTS of ``split``'s resident weights (if any)."""
        records = [_record(Opcode.SPLIT, tag, {"n": split})]
        if self.resident:
            records += self.table_records(tag=tag)
        plan = self.weights(split)
        if plan.addr is not None:
            records.append(_record(Opcode.WEIGHTS, tag, {"mem_addr": plan.addr, "w_addr": plan.image.base,
                                                         "words": len(plan.image.words), "wait": 0, "lane": 0,
                                                         "wait_layers": 0}))
        return records


# Pipelines and schedules ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: ``model`` scores ``items`` candidates and keeps the best ``k``.

    ``items`` ``None``: every candidate of the query (first stage) or every one the previous stage kept; a later
    stage may score fewer, the best ``items`` of the previous stage's result (on the chip, the previous stage's
    filter unit then keeps that many).
    """

    model: object
    items: int = None
    k: int = 1


@dataclass(frozen=True)
class Schedule:
    """How a pipeline runs: ``mode`` ``"rpaccel"`` or ``"baseline"``, the array ``split`` (``None``: the largest
    split with a lane per stage, 1 for the baseline), the sub-batch size ``sub_batch`` (``None``: the most the
    lanes hold) and ``lookahead``: a lane's commands put sub-batch i + 1's dense input and bottom MLP before
    sub-batch i's interaction input and top MLP, so the engine computes the next bottom MLP (and the fetcher
    gathers the next embeddings) while the interaction unit works on the current sub-batch. Lookahead is used only
    where it cannot deadlock. The fetcher waits in a FETCH's lookups while the joiner has no room for their pooled
    vectors, and the chip is sure to reach only the commands up to the next FETCH meanwhile; the joiner makes room as
    the lane takes its interaction words. So the interaction words the lane has not taken by the next FETCH must leave
    room for the FETCH's vectors (:func:`rpaccel.rtl.accel.join.absorbs`: in the lane's output buffer,
    ``join_output_words``, as far as it goes for items whose bottom block is in, pooled vectors in its FIFO,
    ``join_buffer_words``, for the rest). With lookahead those are one sub-batch's where the lane runs alone, and
    two where another stage's FETCH comes between a sub-batch's bottom MLP and the previous sub-batch's top MLP
    (interleaved queries); without lookahead, one where stages interleave (a sub-batch's top MLP then follows its
    bottom MLP at once where even one sub-batch does not fit), none otherwise. Where the FETCH's vectors do not fit
    without its own bottom block, its bottom MLP's layers stay together (no other stage's FETCH between them).
    :func:`~.checker.check_program` checks this condition.

    ``serial`` (baseline only): sub-batches one after another, a SYNC after each sub-batch's SCORE (its DONE
    answers with the query's tag), so nothing of sub-batch i + 1 (its fetch, lookups, MLPs) starts before sub-batch
    i has left the chip; no lookahead. ``None`` is the mode's own: serial for the baseline (RecPipe's TPU-like
    baseline has no sub-batch pipelining), overlapped for RPAccel (whose top-k and filter units keep a query open
    across sub-batches, which a SYNC would wait for). ``serial=False`` with the baseline lets the chip's decoupled
    units overlap sub-batches as they do in RPAccel mode: a stronger baseline than RecPipe's.

    ``interleave`` (RPAccel mode): stage ``s`` of query ``q`` may interleave with stage ``s - 1`` of query ``q + 1``
    (see :func:`compile_queries`). ``False`` keeps each query's commands together, in query order, as a replay
    that sends each query at its arrival needs (a query's commands cannot wait behind a later query's).
    ``balance``: interleaved stages go layer by layer in proportion to their estimated cycles (``False``: one MLP,
    a sub-batch's bottom or top, of each in turn).

    ``lanes`` (RPAccel mode): the lane map, per stage a tuple of lanes of the split; stage ``s`` of query ``q`` runs
    on lane ``lanes[s][q % len(lanes[s])]``, so consecutive queries spread over a stage's lanes. ``None``: stage
    ``s`` on lane ``s % split`` alone (a split of at least the stages' count gives each stage a lane of its own).
    Each (stage, lane) pair has a unit of its own as far as the chip has them: the final stage's ``i``-th lane
    top-k unit ``(s + i) % topk_units``, the others' pairs, numbered in stage order, filter units in turn modulo
    ``filter_units`` (the default map: stage ``s`` on unit ``s % units``). Stages interleave (``interleave``)
    where no lane serves two stages and no unit serves two lanes; queries then go in waves of ``R`` (the fewest
    lanes of a stage that keeps a result, or the single stage's lanes): wave ``w`` runs stage ``s`` of queries
    ``(w - s) R`` to ``(w - s + 1) R - 1``, each lane's queries one after another, different lanes' interleaved. A
    stage's lanes each hold its model's weights: resident weights are shared, and every lane of a streamed stage
    has a ring of slots of its own."""

    mode: str = "rpaccel"
    split: int = None
    sub_batch: int = None
    lookahead: bool = True
    serial: bool = None
    interleave: bool = True
    balance: bool = True
    lanes: tuple = None

    @staticmethod
    def default_split(config, stages):
        """The split of the default RPAccel schedule of ``stages`` stages on ``config``: the largest with a lane
        per stage."""
        return max([n for n in config.splits if n <= stages], default=1)


@dataclass
class Step:
    """Commands sent in one go, and the candidate lists the host writes before sending them (baseline).

    Attributes
    ----------
    records : list of dict
        Command records (``{"op", "tag", "arg"}``).
    query, stage : int or None
        The query and stage the step runs (``None`` for a step of several).
    lists : list of (int, int, int)
        ``(memory line, first position, items)`` of each sub-batch's LIST: the positions
        ``first .. first + items - 1`` of the candidate list, 16-bit, from that line.
    """

    records: list
    query: int = None
    stage: int = None
    lists: list = field(default_factory=list)

    def list_words(self, encoder, indices):
        """MEM_WRITE words that write candidate list ``indices`` (the stage's candidates, in order) where the
        step's FETCHes read it."""
        words = [encoder.mem_write(addr, encode_list(encoder.geometry, np.asarray(indices)[first:first + items]))
                 for addr, first, items in self.lists]
        return np.concatenate(words) if words else encoder.nop(0)


@dataclass
class Program:
    """A compiled pipeline over queries.

    Attributes
    ----------
    setup : ChipSetup
    stages : list of Stage
    queries : list of Query
    mode : str
    split, sub_batch : int
    steps : list of Step
        One step (rpaccel), or one per query and stage (baseline; the first also prepares the chip).
    tags : list of int
        Each query's tag (every command of a query and every response to it carries it).
    items : list of list of int
        Candidates each stage scores, per query.
    serial : bool
        Sub-batches one after another (a SYNC after each; see :class:`Schedule`).
    lanes : tuple of tuple of int
        The lane map: per stage its lanes (stage ``s`` of query ``q`` on ``lanes[s][q % len(lanes[s])]``).
    """

    setup: ChipSetup
    stages: list
    queries: list
    mode: str
    split: int
    sub_batch: int
    steps: list
    tags: list
    items: list
    serial: bool = False
    lanes: tuple = ()

    def sub_batches(self, query, stage):
        """Sizes of the sub-batches of ``stage`` of ``query``, in order."""
        return _sizes(self.items[query][stage], self.sub_batch)

    def records(self):
        """Every command record of every step, in order."""
        return [record for step in self.steps for record in step.records]

    def words(self, encoder=None):
        """Packed words of every step, in order (baseline: the host must write each step's lists first)."""
        return (encoder or ChipEncoder(self.setup.geometry)).encode(self.records())


class _Lane:
    """One lane's activation memory layout and completion counters while a program is compiled."""

    def __init__(self, geometry, split, lane, mlps):
        shape = geometry.engine.splits[split]
        self.lane, self.rows, self.cols = lane, shape.rows, shape.cols
        sizes = [words_per_item(layers, shape.rows) for pair in mlps for layers in pair]
        self.kb = max(size[0] for size in sizes[0::2])
        self.kt = max(size[0] for size in sizes[1::2])
        self.even, self.odd = max(size[1] for size in sizes), max(size[2] for size in sizes)
        per_item = 2 * self.kb + 2 * self.kt + self.even + self.odd
        self.limit = min(shape.acc_rows, shape.act_words // per_item)
        if self.limit < 1:
            raise CompileError(f"One candidate needs {per_item} activation words on lane {lane} of split {split}; "
                               f"the lane has {shape.act_words} (act_buffer_words)")
        self.inputs_done = self.layers_done = self.batches = 0
        self.loaded = 0     # the WEIGHTS count after the lane's latest (its own streamed layers or the resident image)

    def place(self, sub_batch):
        """Lay out the regions for sub-batches of at most ``sub_batch`` candidates (the stride of every region)."""
        s, kb, kt = sub_batch, self.kb, self.kt
        self.stride = s
        self.inputs = {("bottom", 0): 0, ("bottom", 1): kb * s, ("top", 0): 2 * kb * s, ("top", 1): (2 * kb + kt) * s}
        self.hidden = ((2 * kb + 2 * kt) * s, (2 * kb + 2 * kt + self.even) * s)
        self.readers = dict.fromkeys(self.inputs, 0)    # the layer (1-based count) that last read each input region

    def mlp(self, name, layers, weights, items, src, src_words, dst, loader, batch, *, region=None, offset=0,
            words=None):
        """One MLP on the lane's sub-batch number ``batch``: an INPUT, then its layers, each streamed part after the
        WEIGHTS that copies it into the next slot of the lane's ring. The INPUT writes ``words`` words per item
        (default: the first layer's input) from word ``offset`` of the input region of the ``region`` MLP (default
        ``name``) of the sub-batch's parity, where the first layer reads from word 0 (a model without a bottom MLP:
        see :func:`chip_mlps`). Yields per layer (or streamed part) ``(records, cycles, last)``: its ``(opcode,
        arg)`` records (the first also the INPUT), computed when it is asked for (the WEIGHTS counts are those of
        the program so far), its estimated cycles (``ktiles x ntiles x (items + rows + cols)``, or the words its
        WEIGHTS copies if more) and whether it is the MLP's last.

        ``weights`` is the MLP's resident ``w_base`` per layer, or its :class:`StreamedPart` s per layer;
        ``loader`` counts the WEIGHTS commands so far. A LANE command waits for the lane's own latest WEIGHTS (or
        the resident image's), not for other lanes' streams, but never for fewer than all but the last
        :data:`WEIGHTS_LAG` before it: its count stays recent (modulo 256) however far other lanes' streams run
        ahead of it."""
        region = (region or name, batch % 2)
        records = [(Opcode.LANE, {
            "lane": self.lane, "wait_weights": loader.wait(self) % MOD, "src": src, "src_words": src_words,
            "dst": OutDest.JOIN, "cmd": mlp_command(
                op=Op.INPUT, wait_inputs=self.inputs_done % MOD,
                wait_layers=max(self.readers[region], self.layers_done - 64, 0) % MOD, items=items,
                stride=self.stride, in_base=self.inputs[region] + offset * self.stride,
                ktiles=words or _ceil_div(layers[0].shape[0], self.rows))})]
        self.inputs_done += 1
        for number, (layer, weight) in enumerate(zip(layers, weights)):
            last = number == len(layers) - 1
            k, n = layer.shape
            # Every part waits for the layers before this one (the first layer: for the INPUT's region only).
            wait_layers = self.layers_done if number else max(self.layers_done - 2, 0)
            out_base = 0 if last else self.hidden[number % 2]
            parts = weight if isinstance(weight, tuple) else (StreamedPart(None, 0, 0, _ceil_div(n, self.cols)),)
            for index, part in enumerate(parts):
                w_base = weight
                if part.addr is not None:
                    w_base = self.ring[self.slot]
                    user = self.users[self.slot]
                    # Into the slot once the layer that last read it has completed (an earlier command of this
                    # lane, so the loader, which keeps program order, never waits on a command behind it).
                    records.append((Opcode.WEIGHTS, {"mem_addr": part.addr, "w_addr": w_base, "words": part.words,
                                                     "wait": int(user > 0), "lane": self.lane,
                                                     "wait_layers": user % MOD}))
                    loader.done += 1
                    self.loaded = loader.done
                    self.users[self.slot] = self.layers_done + 1
                    self.slot = (self.slot + 1) % len(self.ring)
                records.append((Opcode.LANE, {
                    "lane": self.lane, "wait_weights": loader.wait(self) % MOD, "src": ActSource.DENSE,
                    "src_words": 0,
                    "dst": dst if last else OutDest.JOIN, "cmd": mlp_command(
                        op=Op.LAYER, wait_inputs=self.inputs_done % MOD, wait_layers=wait_layers % MOD,
                        items=items, stride=self.stride,
                        in_base=self.inputs[region] if number == 0 else self.hidden[(number - 1) % 2],
                        out_base=out_base + part.first * self.cols // self.rows * self.stride, w_base=w_base,
                        ktiles=_ceil_div(k, self.rows), ntiles=part.ntiles,
                        params={"m": layer.m, "s": layer.s, "relu": int(layer.relu), "raw": int(layer.raw)},
                        to_output=int(last))}))
                self.layers_done += 1
                if number == 0:
                    self.readers[region] = self.layers_done
                cycles = max(_ceil_div(k, self.rows) * part.ntiles * (items + self.rows + self.cols), part.words)
                yield records, cycles, last and index == len(parts) - 1
                records = []

    def stream(self, base, slots, slot_words):
        """Give the lane a ring of ``slots`` slots of ``slot_words`` weight words from word ``base``."""
        self.ring = [base + i * slot_words for i in range(slots)]
        self.users = [0] * slots    # per slot, the layer (1-based count) that last read it
        self.slot = 0


class _Loader:
    """The WEIGHTS commands of a program so far (the weight loader's completion count once they have run)."""

    def __init__(self, done):
        self.done = done

    def wait(self, lane):
        """What a command of ``lane`` (a :class:`_Lane`) waits for next."""
        return max(lane.loaded, self.done - WEIGHTS_LAG)


def _sizes(items, sub_batch):
    """Sub-batch sizes of ``items`` candidates: as few as ``sub_batch`` allows, differing by at most one."""
    count = _ceil_div(items, sub_batch)
    return [items // count + (index < items % count) for index in range(count)]


class _LaneMap:
    """Which lane and which top-k or filter unit run each stage of each query (:attr:`Schedule.lanes`).

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    split, stages : int
        The split and the pipeline's stage count.
    lanes : sequence of sequence of int or None
        The schedule's lane map (``None``: stage ``s`` on lane ``s % split``; the baseline: lane 0, its split 1's
        only lane, which is also the only map it can be given).
    baseline : bool

    Raises
    ------
    CompileError
        If the map is not one tuple of distinct lanes of the split per stage (naming the stage and the value).
    """

    def __init__(self, geometry, split, stages, lanes, baseline):
        g = geometry
        if lanes is None:
            lanes = tuple((0 if baseline else s % split,) for s in range(stages))
        else:
            if isinstance(lanes, (str, bytes)) or not hasattr(lanes, "__len__") or len(lanes) != stages:
                raise CompileError(f"The lane map {lanes!r} must give a tuple of lanes for each of the {stages} "
                                   "stages")
            lanes = tuple(tuple(served) if hasattr(served, "__iter__") else served for served in lanes)
            for s, served in enumerate(lanes):
                if not isinstance(served, tuple):
                    raise CompileError(f"Stage {s}'s entry {served!r} in the lane map {lanes!r} is not a tuple of "
                                       "lanes")
                if not served:
                    raise CompileError(f"Stage {s} has no lanes in the lane map {lanes!r}")
                for lane in served:
                    if (isinstance(lane, (bool, np.bool_)) or not isinstance(lane, (int, np.integer))
                            or not 0 <= lane < split):
                        raise CompileError(f"Stage {s}'s lane {lane!r} is not a lane of split {split} "
                                           f"(0 to {split - 1})")
                if len(set(served)) != len(served):
                    raise CompileError(f"Stage {s} names a lane twice in the lane map: {served}")
            lanes = tuple(tuple(int(lane) for lane in served) for served in lanes)
        self.lanes = lanes
        final = stages - 1
        # Per (stage, index of its lane): a top-k unit (the final stage) or a filter unit (the others, in turn).
        self.units, pairs = {}, 0
        for s, served in enumerate(lanes):
            for index in range(len(served)):
                self.units[s, index] = (s + index) % g.units if s == final else (pairs + index) % g.filters
            if s != final:
                pairs += len(served)
        self.holders = {key: unit if key[0] == final else g.units + unit for key, unit in self.units.items()}
        owners = {}
        for (s, index), holder in self.holders.items():
            owners.setdefault(holder, set()).add(lanes[s][index])
        served = [set(served) for served in lanes]
        #: Whether stages may interleave: no lane serves two stages, no unit two lanes.
        self.disjoint = (sum(map(len, served)) == len(set().union(*served))
                         and all(len(owner) == 1 for owner in owners.values()))

    def index(self, q, s):
        """The index of the lane of stage ``s`` of query ``q`` in the stage's lanes."""
        return q % len(self.lanes[s])

    def lane(self, q, s):
        """The lane that runs stage ``s`` of query ``q``."""
        return self.lanes[s][self.index(q, s)]

    def unit(self, q, s):
        """The top-k (final stage) or filter unit of stage ``s`` of query ``q``."""
        return self.units[s, self.index(q, s)]

    def holder(self, q, s):
        """The holder (top-k units, then filter units) of stage ``s`` of query ``q``."""
        return self.holders[s, self.index(q, s)]

    def served(self):
        """``{lane: [stage, ...]}``: the stages each lane runs."""
        out = {}
        for s, lanes in enumerate(self.lanes):
            for lane in lanes:
                out.setdefault(lane, []).append(s)
        return out

    def waves(self, queries, interleave):
        """The tasks ``(query, stage)`` in program order: a list of waves, each a list of chains (a lane's tasks,
        one after another), the chains of a wave interleaved (one chain per wave where ``interleave`` is false)."""
        stages = len(self.lanes)
        if not interleave:
            return [[[(q, s)]] for q in range(queries) for s in range(stages)]
        kept = [len(lanes) for lanes in self.lanes[:-1]]
        size = min(kept) if kept else len(self.lanes[0])
        waves = []
        for w in range(_ceil_div(queries, size) + stages - 1):
            chains = {}
            for s in reversed(range(stages)):
                for q in range((w - s) * size, min((w - s + 1) * size, queries)):
                    if q >= 0:
                        chains.setdefault(self.lane(q, s), []).append((q, s))
            waves.append(list(chains.values()))
        return waves


def compile_queries(setup, stages, queries, schedule=Schedule()):
    """Compile the pipeline ``stages`` over ``queries`` (from :meth:`ChipSetup.add_query`) into a
    :class:`Program` under ``schedule``.

    Raises
    ------
    CompileError
        On a stage whose model is not loaded or has no candidates in a query, a stage's items or k out of range
        (naming the stage and the value), a split the chip does not have, a lane map that is not one tuple of
        distinct lanes of the split per stage, a sub-batch larger than a lane holds (or lanes whose stages'
        activations do not fit one candidate), or a streamed layer too large for the slots of every streaming
        lane (:meth:`ChipSetup.weights`).
    rpaccel.host.reference.MLPError
        If an MLP command's field cannot hold a region or count (naming the field).
    """
    g = setup.geometry
    stages, queries = list(stages), list(queries)
    if not stages:
        raise CompileError("A pipeline needs at least one stage")
    if schedule.mode not in ("rpaccel", "baseline"):
        raise CompileError(f"Schedule mode must be 'rpaccel' or 'baseline', not {schedule.mode!r}")
    baseline = schedule.mode == "baseline"
    serial = baseline if schedule.serial is None else schedule.serial
    if serial not in (True, False) or (serial and not baseline):
        raise CompileError(f"Serial sub-batches (a SYNC after each) need the baseline mode and a bool, not "
                           f"serial={schedule.serial!r} in {schedule.mode} mode: the top-k and filter units keep an "
                           "RPAccel query open across its sub-batches, and a SYNC would wait for it forever")
    if baseline:
        if schedule.split not in (None, 1):
            raise CompileError(f"The baseline runs on the whole array (split 1), not split {schedule.split}")
        split = 1
    else:
        split = schedule.split or Schedule.default_split(g.config, len(stages))
    if split not in g.engine.splits:
        raise CompileError(f"Split {split} is not one of the chip's splits {tuple(g.engine.splits)}")
    numbers = [setup.number(stage.model) for stage in stages]
    # The final stage ranks on a top-k unit; a stage whose result a later one reads keeps it on a filter unit.
    mapping = _LaneMap(g, split, len(stages), schedule.lanes, baseline)

    # Items and k of every stage of every query.
    plan = []
    for q, query in enumerate(queries):
        items, previous = [], query.count
        for s, stage in enumerate(stages):
            if numbers[s] not in query.records:
                raise CompileError(f"Query {q} has no candidates for stage {s}'s model {stage.model.spec.name}")
            count = previous if stage.items is None else stage.items
            if not 1 <= count <= previous:
                raise CompileError(f"Stage {s} scores {count} candidates of query {q}; it has {previous} "
                                   f"({'candidates' if s == 0 else 'kept by stage ' + str(s - 1)})")
            final = s == len(stages) - 1
            filtered = not baseline and not final        # a later stage reads it: a filter unit keeps the set
            # A baseline stage that a later one reads is sorted by the host: any k up to its candidates.
            limit, what = ((g.filter_capacity, "filter_capacity") if filtered else (count, "its candidates")
                           if baseline and not final else (g.k_max, "k_max"))
            if not isinstance(stage.k, int) or not 1 <= stage.k <= limit:
                raise CompileError(f"Stage {s}: k = {stage.k!r} is outside [1, {limit}] ({what})")
            if filtered and count > g.filter_capacity:
                raise CompileError(f"Stage {s} filters {count} candidates of query {q}; a filter unit holds "
                                   f"{g.filter_capacity} (filter_capacity)")
            items.append(count)
            previous = min(stage.k, count)
        plan.append(items)

    state = {lane: _Lane(g, split, lane, [setup.mlps(numbers[s]) for s in served])
             for lane, served in sorted(mapping.served().items())}
    sub_batch = schedule.sub_batch or min(lane.limit for lane in state.values())
    for lane in state.values():
        if not 1 <= sub_batch <= lane.limit:
            raise CompileError(f"Sub-batch size {sub_batch} is outside [1, {lane.limit}] for lane {lane.lane} of "
                               f"split {split} (accumulator rows, activation memory)")
        lane.place(sub_batch)

    buffer = setup.weights(split)
    streaming = sorted({lane for s, served in enumerate(mapping.lanes) if (numbers[s], "bottom") in buffer.staged
                        for lane in served})
    if len(streaming) > min(split, len({number for number, _ in buffer.staged})):
        # More streaming lanes than the plan's one per streamed model: smaller slots, two for each.
        buffer = setup.weights(split, len(streaming))
    if streaming:
        # At least two: the plan's slots are at most the room divided by twice its lanes, as many as stream here.
        slots = min((g.engine.weight_words - buffer.region) // (len(streaming) * buffer.slot_words), MAX_SLOTS)
        for index, lane in enumerate(streaming):
            state[lane].stream(buffer.region + index * slots * buffer.slot_words, slots, buffer.slot_words)
    weights = {key: buffer.image.bases.get(key) or buffer.staged[key] for number in set(numbers)
               for key in ((number, "bottom"), (number, "top"))}
    steps = [Step(records=setup.setup_records(split))]
    loader = _Loader(int(buffer.addr is not None))
    for lane in state.values():
        lane.loaded = loader.done
    results = [0] * g.holders
    tags = [q % 256 for q in range(len(queries))]
    kept = {}           # {query: (holder, result number)} of the query's latest kept result
    configured = [None]     # the model whose tables are configured (when they are not all resident)

    def fits(s, items, count, sendable=None):
        """The joiner takes ``count`` sub-batches of ``items`` of stage ``s`` without their lane, the bottom blocks
        of the first ``sendable`` items in (default: all; see :class:`Schedule`)."""
        spec = setup.models[numbers[s]].spec
        return absorbs(g, [(items, spec.interaction, spec.num_tables + 1, spec.emb_dim)] * count, sendable)

    def task(q, s, alone):
        """Append the commands of stage ``s`` of query ``q`` (``alone``: no other stage interleaves with it),
        yielding after each layer (or streamed part) the lane's estimated cycles for it and whether it ended an
        MLP."""
        query, stage, tag = queries[q], stages[s], tags[q]
        number, lane, unit = numbers[s], state[mapping.lane(q, s)], mapping.unit(q, s)
        if baseline:
            steps.append(Step(records=[], query=q, stage=s))
        step = steps[-1]
        if not setup.resident and configured[0] != number:
            step.records += setup.table_records(number, tag)
            configured[0] = number
        qmodel = setup.models[number]
        spec = qmodel.spec
        records = query.records[number]
        bottom, top = setup.mlps(number)
        join = {"mode": MODES.index(spec.interaction), "vectors": spec.num_tables + 1, "dim": spec.emb_dim,
                "m": qmodel.inter_m, "s": qmodel.inter_s}
        inter_words = output_words(spec.interaction, spec.num_tables + 1, spec.emb_dim, g.rows)
        past_joiner = ({}, {})
        if not spec.bottom:
            # The dense words go to the top MLP's input region, the interaction words after them (chip_mlps).
            dense = records.dense_words * g.rows // lane.rows
            past_joiner = ({"region": "top", "words": dense},
                           {"offset": dense, "words": _ceil_div((spec.num_tables + 1) * spec.emb_dim, lane.rows)})
        final = s == len(stages) - 1
        sizes = _sizes(plan[q][s], sub_batch)
        lookahead = schedule.lookahead and not serial and fits(s, max(sizes), 1 if alone else 2)
        # A sub-batch whose pooled vectors the joiner cannot take without its lane: its top MLP right after its
        # bottom MLP, no other stage's FETCH between. Without its bottom block either (the last sub-batch's):
        # its bottom MLP's layers together.
        together = not (lookahead or alone or fits(s, max(sizes), 1))
        count = 2 if lookahead and not alone else 1
        split_bottom = not together and fits(s, max(sizes), count, (count - 1) * max(sizes))
        dest = ScoreDest.RSP if baseline else ScoreDest.TOPK if final else ScoreDest.FILTER
        # The lane's order: each sub-batch's FETCH and bottom MLP, then (one sub-batch later with lookahead)
        # its top MLP and its SCORE.
        events = []
        for index in range(len(sizes)):
            events.append(("bottom", index))
            if not lookahead:
                events.append(("top", index))
            elif index:
                events.append(("top", index - 1))
        if lookahead:
            events.append(("top", len(sizes) - 1))
        firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
        batches, cycles = {}, 0
        for part, index in events:
            items, closing = sizes[index], index == len(sizes) - 1
            if part == "bottom":
                fetch = {"lane": lane.lane, "source": FetchSource.RANGE, "first": firsts[index], "list_addr": 0,
                         "unit": 0, "wait_results": 0, "release": 0, "items": items, **records.fetch_fields(),
                         "join": join}
                if s and baseline:
                    addr = setup.memory.allocate(list_lines(g, items), what=f"the list of query {q} stage {s}")
                    step.lists.append((addr, firsts[index], items))
                    fetch.update(source=FetchSource.LIST, list_addr=addr)
                elif s:
                    fetch.update(source=FetchSource.SURVIVORS, unit=kept[q][0], wait_results=kept[q][1] % MOD,
                                 release=int(closing))
                step.records.append(_record(Opcode.FETCH, tag, fetch))
                batches[index] = lane.batches
                lane.batches += 1
                mlp = lane.mlp("bottom", bottom, weights[number, "bottom"], items, ActSource.DENSE,
                               records.dense_words, OutDest.JOIN, loader, batches[index], **past_joiner[0])
            else:
                mlp = lane.mlp("top", top, weights[number, "top"], items, ActSource.INTERACT, inter_words,
                               OutDest.SCORE, loader, batches[index], **past_joiner[1])
            # Each layer (or streamed part) yields its cycles, so other stages' commands go between the layers as
            # the lanes are estimated to reach them (the weight loader takes WEIGHTS in program order); a bottom MLP
            # only at its end unless ``split_bottom``; with ``together``, only after a sub-batch's top MLP.
            for layer_records, layer_cycles, last in mlp:
                step.records.extend(_record(op, tag, arg) for op, arg in layer_records)
                if last and part == "top":
                    step.records.append(_record(Opcode.SCORE, tag, {
                        "lane": lane.lane, "dest": dest, "unit": 0 if baseline else unit, "items": items,
                        "last": int(closing),
                        "k": (stage.k if final else plan[q][s + 1]) if closing and not baseline else 0,
                        "keep": int(closing and not final and not baseline),
                        "report": int(closing and final and not baseline)}))
                    if serial:
                        step.records.append(_record(Opcode.SYNC, tag))
                cycles += layer_cycles
                if (last and part == "top") or (not together and (last or part == "top" or split_bottom)):
                    yield cycles, last
                    cycles = 0
        if not baseline and not final:
            holder = mapping.holder(q, s)
            results[holder] += 1
            kept[q] = (holder, results[holder])

    def chain(tasks, alone):
        """The tasks of one lane in a wave, one after another."""
        for q, s in tasks:
            yield from task(q, s, alone)

    # Stage s of queries q .. q + R - 1 and stage s - 1 of the next R queries run at once (on different lanes and
    # units; with the default map R = 1): their sub-batches interleave in the program, so the units that take
    # commands in program order for every lane (the fetcher, the weight loader) serve the lanes in turn rather than
    # one stage's whole query first. Balanced, the next MLP placed is the one whose lane is estimated to reach it
    # first (ties: the later stage); otherwise one of each lane's in turn.
    interleave = schedule.interleave and not baseline and setup.resident and mapping.disjoint
    for wave in mapping.waves(len(queries), interleave):
        running = [[0, order, chain(tasks, len(wave) == 1)] for order, tasks in enumerate(wave)]
        while running:
            # Balanced: the task whose lane is estimated to be earliest goes on by a layer; otherwise each in turn
            # by an MLP.
            clock = min(running, key=lambda each: each[:2]) if schedule.balance else running[0]
            for cycles, ended in clock[2]:
                clock[0] += cycles
                if schedule.balance or ended:
                    break
            else:
                running.remove(clock)
                continue
            if not schedule.balance:
                running.append(running.pop(0))
    return Program(setup=setup, stages=stages, queries=queries, mode=schedule.mode, split=split,
                   sub_batch=sub_batch, steps=steps, tags=tags, items=plan, serial=serial, lanes=mapping.lanes)


# The golden model ------------------------------------------------------------------------------------------------

@dataclass
class Expected:
    """What the chip answers to a program.

    Attributes
    ----------
    responses : Responses
        Every response, in an order that is exact per tag.
    rankings : list
        Per query, the final ranking ``[(score, index), ...]`` best first (baseline: the host's sort).
    logits : dict
        ``{(query, stage): (indices, logits)}``: the candidates each stage scores and their logits.
    lists : dict
        ``{(query, stage): indices}``: the candidates of each later stage (what the baseline host writes).
    """

    responses: Responses
    rankings: list
    logits: dict
    lists: dict


def expected_responses(program):
    """The :class:`Expected` answers of ``program``: logits by :func:`chip_logits`, rankings by
    :func:`rpaccel.numeric.topk` (ties to the lower candidate index, as the top-k units break them)."""
    setup = program.setup
    columns = {name: [] for name in ("kind", "tag", "last", "index", "score")}
    rankings, logits, lists = [], {}, {}

    def emit(kind, tag, indices, scores, last=True):
        count = len(indices)
        columns["kind"].append(np.full(count, kind.value))
        columns["tag"].append(np.full(count, tag))
        columns["last"].append((np.arange(count) == count - 1) & last)
        columns["index"].append(np.asarray(indices))
        columns["score"].append(np.asarray(scores))

    for q, query in enumerate(program.queries):
        tag = program.tags[q]
        candidates = np.arange(query.count)
        for s, stage in enumerate(program.stages):
            number = setup.number(stage.model)
            candidates = candidates[:program.items[q][s]]
            if s:
                lists[q, s] = candidates
            dense_q, ids = query.inputs[number]
            scores = chip_logits(setup.models[number], dense_q[candidates], ids[candidates])
            logits[q, s] = (candidates, scores)
            final = s == len(program.stages) - 1
            if program.mode == "rpaccel" and not final:
                # A filter unit keeps the set of as many as the next stage scores, in the order they were scored.
                _, best = topk(scores, program.items[q][s + 1], candidates)
                kept = candidates[np.isin(candidates, best)]
            else:
                best_scores, kept = topk(scores, stage.k, candidates)
            if program.mode == "baseline":
                # Per sub-batch its logits (``last`` on the stage's last, its closing SCORE's), and with serial
                # sub-batches the DONE of its SYNC, which waits until the sub-batch has left the chip.
                ends = np.cumsum(program.sub_batches(q, s)) if program.serial else [len(candidates)]
                for first, end in zip([0, *ends[:-1]], ends):
                    emit(ResponseKind.LOGIT, tag, candidates[first:end], scores[first:end], last=end == ends[-1])
                    if program.serial:
                        emit(ResponseKind.DONE, tag, [0], [0])
            elif final:
                emit(ResponseKind.RANK, tag, kept, best_scores)
            candidates = kept
        rankings.append(list(zip(best_scores.tolist(), candidates.tolist())))
    flat = {name: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
            for name, parts in columns.items()}
    count = len(flat["kind"])
    flat.update(code=np.zeros(count, dtype=np.int64), data=np.zeros((count, 1), dtype=np.uint64))
    return Expected(responses=Responses(setup.geometry, flat), rankings=rankings, logits=logits, lists=lists)
