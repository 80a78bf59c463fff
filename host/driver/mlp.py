"""Host-side layout for the MLP engine: weight images, chunked command streams, input and output packing.

Shared by the tests, the benchmarks and (later) the host driver: everything that decides *where* data lives in
the engine and *in which order* it streams is here, in one place, next to the hardware it describes
(:mod:`rpaccel.rtl.mlp`). Nothing here simulates anything; the engine is held to :mod:`rpaccel.host.reference`.

A batch on one lane runs in chunks of at most :func:`chunk_limit` items (the accumulator rows and the
activation memory of the lane bound it), as few and as even as possible. The activation memory of a lane holds
two input regions (the loader fills the next chunk's inputs while the current chunk computes) and two hidden
regions the layers alternate between; every region has a row of ``chunk`` words per word of an item
(stride = chunk). Per chunk the stream
is one INPUT command and one LAYER command per layer, each layer waiting for the previous one (its input), the
INPUT waiting until the chunk two before has finished reading the region it reuses.

Example::

    plan = plan_engine(config, split=1, jobs={0: (layers, inputs)})
    result = Player(EngineHarness, config).run(plan.player_inputs(), expect=plan.expect(), packed=True,
                                               statics=plan.statics())
    outputs = plan.decode(result.outputs)       # {lane: items x N array}
"""

from dataclasses import dataclass, field

import numpy as np

from ...rtl.mlp import COUNT_BITS, WAIT_BITS, EngineGeometry, MLPCommand, MLPEngine, Op
from ..reference import MLPError, check_mlp
from .codec import CodecError, codec, from_ints, to_ints

__all__ = ["EnginePlan", "LaneProgram", "WeightImage", "chunk_limit", "layout_weights", "payload_shapes",
           "mlp_command", "plan_engine", "plan_lane", "words_per_item"]


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class WeightImage:
    """Weight memory words of one or more MLPs laid out for one split.

    Attributes
    ----------
    words : numpy.ndarray
        ``words x array_cols`` int8: the image, starting at word ``base``.
    base : int
        Address of the first word.
    bases : dict
        ``{key: (w_base of layer 0, w_base of layer 1, ...)}`` per laid-out MLP.
    """

    words: np.ndarray
    base: int
    bases: dict


def layout_weights(geometry, split, mlps, *, base=0):
    """Lay out ``mlps`` (``{key: [Layer, ...]}``) for sub-arrays of split ``split``, from word ``base``.

    Per layer, per n-tile: the bias (``cols`` int32, little-endian), then per k-tile its ``rows`` weight rows of
    ``cols`` int8, ``array_cols // cols`` rows to a word; tiles past the edge of the matrix are zero.

    Raises
    ------
    MLPError
        If the image does not fit the weight memory.
    """
    shape = geometry.splits[split]
    r, c, wb = shape.rows, shape.cols, geometry.word_bytes
    chunks, bases, address = [], {}, base
    for key, layers in mlps.items():
        check_mlp(layers)
        layer_bases = []
        for layer in layers:
            k, n = layer.shape
            kt, nt = _ceil_div(k, r), _ceil_div(n, c)
            w = np.zeros((kt * r, nt * c), dtype=np.int64)
            w[:k, :n] = layer.weights
            bias = np.zeros(nt * c, dtype=np.int64)
            bias[:n] = layer.bias
            layer_bases.append(address)
            for j in range(nt):
                bias_bytes = np.frombuffer(bias[j * c:(j + 1) * c].astype("<i4").tobytes(), dtype=np.int8)
                padded = np.zeros(shape.bias_words * wb, dtype=np.int8)
                padded[:bias_bytes.size] = bias_bytes
                chunks.append(padded.reshape(shape.bias_words, wb))
                tiles = w[:, j * c:(j + 1) * c].reshape(kt, r * c)  # k-tile major, then row, then column
                chunks.append(tiles.reshape(kt * shape.tile_words, wb).astype(np.int8))
            address += nt * (shape.bias_words + kt * shape.tile_words)
        bases[key] = tuple(layer_bases)
    words = np.concatenate(chunks) if chunks else np.zeros((0, wb), dtype=np.int8)
    if base + len(words) > geometry.weight_words:
        raise MLPError(f"The weights need {base + len(words)} words of the weight memory, which has "
                       f"{geometry.weight_words} (weight_buffer_words)")
    return WeightImage(words=words, base=base, bases=bases)


def words_per_item(layers, rows):
    """Activation words of an item of ``layers`` on a lane of ``rows`` rows: ``(inputs, even, odd)``, its input
    words and the widest hidden layer of each parity (layer ``i`` writes the hidden region of parity ``i % 2``)."""
    inputs = _ceil_div(layers[0].shape[0], rows)
    hidden = [_ceil_div(layer.shape[1], rows) for layer in layers[:-1]]
    return inputs, max(hidden[0::2], default=0), max(hidden[1::2], default=0)


def chunk_limit(geometry, split, layers):
    """The most items one chunk of ``layers`` can hold on a lane of split ``split``.

    Raises
    ------
    MLPError
        If not even one item fits the activation memory.
    """
    shape = geometry.splits[split]
    inputs, even, odd = words_per_item(layers, shape.rows)
    per_item = 2 * inputs + even + odd
    limit = min(shape.acc_rows, shape.act_words // per_item)
    if limit < 1:
        raise MLPError(f"One item needs {per_item} activation words per lane in split {split}, the lane has "
                       f"{shape.act_words} (act_buffer_words)")
    return limit


def payload_shapes(geometry):
    """``{port: payload shape}`` of every stream of an :class:`~rpaccel.rtl.mlp.MLPEngine` of ``geometry``."""
    return {name: member.signature.members["payload"].shape
            for name, member in MLPEngine.members(geometry).items() if member.is_signature}


@dataclass
class LaneProgram:
    """What one lane is sent for a batch, and how to read back what it returns.

    Attributes
    ----------
    commands : list of dict
        :class:`~rpaccel.rtl.mlp.MLPCommand` payloads, in order.
    inputs : numpy.ndarray
        ``words x lane_rows`` int8 words of the lane's ``act`` stream, in order.
    chunks : list of (int, int)
        ``(first item, items)`` of each chunk.
    outputs : int
        Transfers the lane's ``out`` stream gives.
    out_features, out_ntiles, cols, lane_cols : int
        Width of the last layer, its n-tiles, outputs per n-tile, width of the ``out`` payload.
    macs : int
        Multiply-accumulates of the batch (unpadded).
    tiles : int
        Tile passes (n-tiles x k-tiles of every layer, per chunk).
    inputs_done, layers_done : int
        The lane's completion counters after the batch.
    """

    commands: list
    inputs: np.ndarray
    chunks: list
    outputs: int
    out_features: int
    out_ntiles: int
    cols: int
    lane_cols: int
    macs: int
    tiles: int
    inputs_done: int
    layers_done: int

    def decode(self, vectors):
        """Turn the ``out`` transfers (``outputs x lane_cols`` int32 values, unpacked) into the items x N result
        matrix."""
        words = np.asarray(vectors, dtype=np.int64)
        if words.shape != (self.outputs, self.lane_cols):
            raise ValueError(f"Expected {self.outputs} output vectors of {self.lane_cols}, got shape {words.shape}")
        rows, at = [], 0
        for _, items in self.chunks:
            block = words[at:at + self.out_ntiles * items].reshape(self.out_ntiles, items, self.lane_cols)
            at += self.out_ntiles * items
            block = block[:, :, :self.cols].transpose(1, 0, 2).reshape(items, self.out_ntiles * self.cols)
            rows.append(block[:, :self.out_features])
        return np.concatenate(rows) if rows else np.zeros((0, self.out_features), dtype=np.int64)


def plan_lane(geometry, split, lane, layers, inputs, w_bases, *, chunk=None, inputs_done=0, layers_done=0):
    """The command and input streams that run ``layers`` on the batch ``inputs`` on ``lane`` of split ``split``.

    Parameters
    ----------
    geometry : rpaccel.rtl.mlp.EngineGeometry
    split, lane : int
    layers : list of Layer
    inputs : array_like
        items x K int8.
    w_bases : sequence of int
        Weight memory address of each layer (from :func:`layout_weights`).
    chunk : int, optional
        Most items per chunk (default and maximum: :func:`chunk_limit`); the batch is split into as few chunks
        as that allows, of sizes differing by at most one.
    inputs_done, layers_done : int
        The lane's completion counters before the batch (0 after reset).

    Raises
    ------
    MLPError
        On an invalid MLP or input, a chunk larger than the lane can hold, or counts beyond the command fields.
    """
    if split not in geometry.splits:
        raise MLPError(f"Split {split} is not one of the engine's splits {tuple(geometry.splits)}")
    if not 0 <= lane < split:
        raise MLPError(f"Lane {lane} does not exist in split {split}")
    check_mlp(layers, inputs)
    inputs = np.asarray(inputs, dtype=np.int64)
    shape = geometry.splits[split]
    r, c = shape.rows, shape.cols
    limit = chunk_limit(geometry, split, layers)
    chunk = limit if chunk is None else chunk
    if not 1 <= chunk <= limit:
        raise MLPError(f"Chunk must be between 1 and {limit} items for this MLP on split {split}, not {chunk}")
    items = len(inputs)
    if items == 0:
        raise MLPError("The batch has no items")
    # As many chunks as the chunk size needs, made as even as possible: a short last chunk would run tiles
    # too short to hide the next tile's weight load.
    count_of_chunks = _ceil_div(items, chunk)
    sizes = [items // count_of_chunks + (index < items % count_of_chunks) for index in range(count_of_chunks)]
    chunk = sizes[0]
    k_words, even, _ = words_per_item(layers, r)
    x_base = (0, k_words * chunk)
    hidden_base = (2 * k_words * chunk, (2 * k_words + even) * chunk)
    for layer in layers:
        kt, nt = _ceil_div(layer.shape[0], r), _ceil_div(layer.shape[1], c)
        if kt >= 1 << COUNT_BITS or nt >= 1 << COUNT_BITS:
            raise MLPError(f"A layer of shape {layer.shape} has too many tiles for the command fields")
    mod = 1 << WAIT_BITS

    commands, words, chunks = [], [], []
    n_inputs, n_layers = inputs_done, layers_done
    first_layer_of_chunk = []
    tiles = 0
    for index, count in enumerate(sizes):
        start = sum(sizes[:index])
        chunks.append((start, count))
        # Input words, item-major: item i's words 0 .. k_words - 1, then item i + 1's.
        x = np.zeros((count, k_words * r), dtype=np.int64)
        x[:, :layers[0].shape[0]] = inputs[start:start + count]
        words.append(x.reshape(count * k_words, r))
        reuse = first_layer_of_chunk[index - 2] + 1 if index >= 2 else layers_done
        commands.append(mlp_command(op=Op.INPUT, wait_inputs=n_inputs % mod, wait_layers=reuse % mod, items=count,
                                 stride=chunk, in_base=x_base[index % 2], ktiles=k_words))
        n_inputs += 1
        this_input = n_inputs
        for number, (layer, w_base) in enumerate(zip(layers, w_bases)):
            kt, nt = _ceil_div(layer.shape[0], r), _ceil_div(layer.shape[1], c)
            last = number == len(layers) - 1
            in_base = x_base[index % 2] if number == 0 else hidden_base[(number - 1) % 2]
            out_base = 0 if last else hidden_base[number % 2]
            # A layer waits for the previous one (its input); the first one of a chunk waits for nothing but,
            # to keep the modulo-256 counters comparable, for the layer two commands back.
            wait_layers = n_layers if number else max(layers_done, n_layers - 2)
            if number == 0:
                first_layer_of_chunk.append(n_layers)
            commands.append(mlp_command(
                op=Op.LAYER, wait_inputs=this_input % mod, wait_layers=wait_layers % mod, items=count, stride=chunk,
                in_base=in_base, out_base=out_base, acc_base=0, w_base=w_base, ktiles=kt, ntiles=nt,
                params={"m": layer.m, "s": layer.s, "relu": int(layer.relu), "raw": int(layer.raw)},
                to_output=int(last)))
            n_layers += 1
            tiles += kt * nt
    out_ntiles = _ceil_div(layers[-1].shape[1], c)
    return LaneProgram(
        commands=commands, inputs=np.concatenate(words), chunks=chunks, outputs=out_ntiles * items,
        out_features=layers[-1].shape[1], out_ntiles=out_ntiles, cols=c, lane_cols=geometry.lane_cols(lane),
        macs=items * sum(layer.shape[0] * layer.shape[1] for layer in layers), tiles=tiles,
        inputs_done=n_inputs % mod, layers_done=n_layers % mod)


def mlp_command(**fields):
    """An :class:`~rpaccel.rtl.mlp.MLPCommand` payload (unnamed fields zero), checked against its layout.

    Raises
    ------
    MLPError
        If a field does not fit (naming it).
    """
    command = {"op": 0, "wait_inputs": 0, "wait_layers": 0, "items": 0, "stride": 0, "in_base": 0, "out_base": 0,
               "acc_base": 0, "w_base": 0, "ktiles": 0, "ntiles": 0,
               "params": {"m": 0, "s": 0, "relu": 0, "raw": 0}, "to_output": 0}
    command.update(fields)
    command["op"] = int(command["op"])
    try:
        codec(MLPCommand).pack_value(command)
    except CodecError as error:
        raise MLPError(f"Command field {str(error).removeprefix('payload.')}") from None
    return command


@dataclass
class EnginePlan:
    """A batch for every working lane of the engine, with the weight image they share.

    Attributes
    ----------
    geometry : EngineGeometry
    split : int
    weights : WeightImage
    lanes : dict
        ``{lane: LaneProgram}``.
    """

    geometry: EngineGeometry
    split: int
    weights: WeightImage
    lanes: dict = field(default_factory=dict)

    def words(self):
        """``{port: (n, limbs) packed words}`` of every input stream (see :mod:`rpaccel.host.driver.codec`)."""
        shapes = payload_shapes(self.geometry)
        image = self.weights
        words = {"wload": codec(shapes["wload"]).pack({"addr": image.base + np.arange(len(image.words)),
                                                       "data": image.words})}
        for lane, program in self.lanes.items():
            words[f"cmd{lane}"] = codec(MLPCommand).pack_values(program.commands)
            padded = np.zeros((len(program.inputs), self.geometry.lane_rows(lane)), dtype=np.int64)
            padded[:, :program.inputs.shape[1]] = program.inputs
            words[f"act{lane}"] = codec(shapes[f"act{lane}"]).pack(padded)
        return words

    def player_inputs(self):
        """``{port: packed values}`` (Python ints) for :class:`~rpaccel.sim.player.Player` (``packed=True``)."""
        return {port: to_ints(words) for port, words in self.words().items()}

    def expect(self):
        """``{out port: transfers}`` of every lane (0 for idle lanes)."""
        return {f"out{lane}": self.lanes[lane].outputs if lane in self.lanes else 0
                for lane in range(self.geometry.lanes)}

    def statics(self):
        """Static inputs of :class:`~rpaccel.sim.mlp_harness.EngineHarness`: the split and the preload size."""
        return {"split": self.split, "preload": len(self.weights.words)}

    def decode(self, outputs):
        """``{lane: items x N}`` from the packed ``{out<l>: words}`` (Python ints, as the player returns them
        with ``packed=True``, or ``(n, limbs)`` words)."""
        shapes = payload_shapes(self.geometry)
        decoded = {}
        for lane, program in self.lanes.items():
            out = codec(shapes[f"out{lane}"])
            words = outputs[f"out{lane}"]
            if not (isinstance(words, np.ndarray) and words.ndim == 2):
                words = from_ints(words, out.width)
            decoded[lane] = program.decode(out.unpack(words))
        return decoded

    @property
    def macs(self):
        return sum(program.macs for program in self.lanes.values())

    @property
    def tiles(self):
        return sum(program.tiles for program in self.lanes.values())


def plan_engine(config, split, jobs, *, chunk=None, geometry=None, counters=None):
    """Lay out a batch per lane: ``jobs`` is ``{lane: (layers, inputs)}``.

    Lanes given the same ``layers`` list object share its weights in the image. ``counters`` gives
    ``{lane: (inputs_done, layers_done)}`` of an engine that has already run (default: just reset), e.g. the
    ``inputs_done``/``layers_done`` of the previous plan's lane programs.
    """
    geometry = geometry or EngineGeometry(config)
    if split not in geometry.splits:
        raise MLPError(f"Split {split} is not one of the engine's splits {tuple(geometry.splits)}")
    mlps = {}
    for layers, _ in jobs.values():
        mlps.setdefault(id(layers), layers)
    image = layout_weights(geometry, split, mlps)
    plan = EnginePlan(geometry=geometry, split=split, weights=image)
    for lane, (layers, inputs) in sorted(jobs.items()):
        inputs_done, layers_done = (counters or {}).get(lane, (0, 0))
        plan.lanes[lane] = plan_lane(geometry, split, lane, layers, inputs, image.bases[id(layers)], chunk=chunk,
                                     inputs_done=inputs_done, layers_done=layers_done)
    return plan
