"""The static checker of chip programs: what the driver runs before sending one.

A program whose streams do not line up stalls the chip (docs/chip.md), so :func:`check_program` replays a
program's commands in order, without data, and refuses it with a :class:`ProgramError` naming the command (its
position and opcode) and what does not line up:

* **Streams**, per lane: the dense words FETCHes send and INPUT(DENSE)s take, the candidate indices FETCHes send
  and SCOREs take, the bottom outputs LAYERs send to the joiner and join jobs take, the interaction words join jobs
  send and INPUT(INTERACT)s take, the logits LAYERs send and SCOREs take, item by item with the same words per
  item; join jobs and the pooled vectors the records' lookups give (with the memory image).
* **Waits**: every ``wait_*`` (weights, a lane's inputs and layers, kept results) met by commands before it
  (counters modulo 256, within half the range), so the commands can run in program order and no unit waits on a
  command behind one it holds; a kept result not read after its release, and released before the result two
  later reuses its bank; every kept result released by the end.
* **Weights**: a LAYER waits for the WEIGHTS that last loaded its words; a WEIGHTS that overwrites words an
  earlier layer reads (a streaming slot) waits, on that layer's lane, until the last of them has completed.
* **The joiner's buffers**: the chip reaches the commands between a FETCH and the next one even while the fetcher
  waits in that FETCH's lookups, but not necessarily those after: the interaction words of the FETCH's lane that
  they leave untaken, with the bottom blocks they give, must leave the joiner room for the FETCH's pooled vectors
  (:func:`~rpaccel.rtl.accel.join.absorbs`: the untaken items' output, where their bottom block is in, in the
  lane's output buffer as far as it goes, the others' pooled vectors in the lane's FIFO). Otherwise the fetcher
  waits for the joiner, the joiner for the lane, and the lane for commands behind the fetcher
  (:mod:`rpaccel.rtl.accel.join`).
* **Kept results' order**: a unit keeps results numbered in the order it closes queries, and takes one lane's
  query at a time, whichever lane asks first; so where a unit that keeps results takes a query from another lane
  than its last, that last query's result must be waited for (a FETCH of ``SURVIVORS``) before the FETCH that
  gives the new query's first candidate, so the numbers the program counts are the chip's.
* **Ranges**: lanes of the current split, top-k and filter units, ``k``, items within a lane's accumulator rows,
  layers whose weights WEIGHTS loaded, join vectors and tables within the configuration.
"""

from bisect import bisect_right
from collections import defaultdict

import numpy as np

from ....rtl.accel.isa import ActSource, FetchSource, Opcode, OutDest, ScoreDest
from ....rtl.accel.join import absorbs
from ....rtl.interaction import MODES
from ....rtl.mlp import WAIT_BITS, Op
from ..interaction import output_words
from .encoding import _value, decode_commands, geometry_of
from .memory import decode_records

__all__ = ["ProgramError", "check_program"]

MOD = 1 << WAIT_BITS


class ProgramError(ValueError):
    """A program the chip would stall on or refuse (the message names the command and what is wrong)."""


def _met(done, wait):
    """``done`` completions satisfy a wait for ``wait`` (modulo 256, within half the range)."""
    return (done - wait) % MOD < MOD // 2


def _where(position, op):
    return f"command {position} ({op.name})"


class _Stream:
    """One stream between units: what producers send and consumers take, item by item."""

    def __init__(self, name):
        self.name = name
        self.producers, self.consumers = [], []

    def produce(self, where, items, per_item, what):
        self.producers.append([where, items, per_item, what])

    def consume(self, where, items, per_item, what):
        self.consumers.append([where, items, per_item, what])

    def match(self):
        producers, consumers = iter(self.producers), iter(self.consumers)
        p, c = next(producers, None), next(consumers, None)
        while p and c:
            if p[2] != c[2]:
                raise ProgramError(f"{c[0]}: {c[3]} takes {c[2]} words per item of {self.name}, but {p[0]} "
                                   f"({p[3]}) sends {p[2]}")
            step = min(p[1], c[1])
            p[1] -= step
            c[1] -= step
            if not p[1]:
                p = next(producers, None)
            if not c[1]:
                c = next(consumers, None)
        if p:
            raise ProgramError(f"{p[0]}: {p[1]} items of {self.name} ({p[3]}) that no command takes")
        if c:
            raise ProgramError(f"{c[0]}: {c[3]} takes {c[1]} items of {self.name} that no command sends")


def check_program(geometry, commands, *, memory=None, split=1, tables=None):
    """Check a program before it is sent.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry or rpaccel.config.AccelConfig
    commands : list of dict or numpy.ndarray
        Command records (``{"op", "tag", "arg"}``) or packed command words.
    memory : rpaccel.host.driver.chip.memory.MemoryImage, optional
        The memory the program runs on: the fetched records' lookups are checked against the join jobs.
    split : int
        The array's split before the program (1 after reset).
    tables : int, optional
        Tables configured before the program (default: those its EMB CONFIGs configure, if any).

    Raises
    ------
    ProgramError
        Naming the first command (position and opcode) that does not line up, and why.
    """
    g = geometry_of(geometry)
    if isinstance(commands, np.ndarray):
        commands = decode_commands(g, commands)
    streams = defaultdict(lambda: None)

    def stream(kind, lane):
        if streams[kind, lane] is None:
            streams[kind, lane] = _Stream(f"{kind} (lane {lane})")
        return streams[kind, lane]

    pooled = _Stream("pooled vectors")
    weights_done = 0
    loaded = np.zeros(g.engine.weight_words, dtype=bool)
    # Per weight word: the WEIGHTS (1-based count) that last wrote it, and per lane the last layer (1-based count)
    # that read it since.
    writer = np.zeros(g.engine.weight_words, dtype=np.int64)
    reader = np.zeros((g.lanes, g.engine.weight_words), dtype=np.int64)
    inputs, layers = defaultdict(int), defaultdict(int)
    # Per holder (top-k units, then filter units):
    results = [0] * g.holders           # kept results completed (as SCOREs before a point close them)
    released = [set() for _ in range(g.holders)]
    kept_items = [{} for _ in range(g.holders)]
    open_items = [0] * g.holders        # candidates of the query a unit is taking
    configured = set()
    records_checked = set()
    # Per lane: its join jobs ({end: items up to its last, job: (mode, vectors, dim)}), the first whose interaction
    # words are not all taken, the items whose interaction words INPUTs have taken; the latest FETCH (where, lane).
    joins, open_join, inter_taken = defaultdict(list), defaultdict(int), defaultdict(int)
    bottom_given = defaultdict(int)     # per lane, items whose bottom block LAYERs have sent
    last_fetch = None
    # Per lane, the index items its FETCHes give (cumulative) and where those FETCHes are; the items its SCOREs take.
    fetch_ends, fetch_at, scored = defaultdict(list), defaultdict(list), defaultdict(int)
    # Per holder, its last query's lane and kept result (or None), and (position, result) of FETCHes waiting on it.
    user, awaited = {}, defaultdict(list)

    def absorbed(where, lane):
        """The joiner takes the FETCH's pooled vectors with the lane's interaction words taken so far."""
        start, untaken = inter_taken[lane], []
        for job in joins[lane][open_join[lane]:]:
            untaken.append((job["end"] - start, *job["job"]))
            start = job["end"]
        if not absorbs(g, untaken, sendable=bottom_given[lane] - inter_taken[lane]):
            raise ProgramError(
                f"{where}: the joiner cannot take the FETCH's pooled vectors while lane {lane} leaves the interaction "
                f"words of {sum(items for items, *_ in untaken)} items untaken before the next FETCH, the bottom "
                f"blocks of {bottom_given[lane] - inter_taken[lane]} of them given (join_buffer_words "
                f"{g.config.join_buffer_words}, join_output_words {g.config.join_output_words}): "
                "the fetcher would wait in its lookups for the joiner, the joiner for the lane, the lane for "
                "commands behind the fetcher")

    for position, record in enumerate(commands):
        op = record["op"]
        if not isinstance(op, Opcode):
            raise ProgramError(f"command {position}: opcode {op} is not one the chip knows")
        arg, where = record["arg"], _where(position, op)

        def within(name, value, low, high, *, where=where):
            if not low <= value <= high:
                raise ProgramError(f"{where}: {name} = {value} is outside [{low}, {high}]")

        def lane_of(lane, *, where=where, split=split):
            if not 0 <= lane < split:
                raise ProgramError(f"{where}: lane {lane} is not active in split {split}")
            return lane

        shape = g.engine.splits[split]
        if op is Opcode.SPLIT:
            if arg["n"] not in g.engine.splits:
                raise ProgramError(f"{where}: split {arg['n']} is not one of {tuple(g.engine.splits)}")
            split = arg["n"]
        elif op is Opcode.WEIGHTS:
            within("w_addr + words", arg["w_addr"] + arg["words"], 1, g.engine.weight_words)
            if arg["wait"]:
                lane = lane_of(arg["lane"])
                if not _met(layers[lane], arg["wait_layers"]):
                    raise ProgramError(f"{where}: waits for {arg['wait_layers']} layers of lane {lane}; only "
                                       f"{layers[lane]} come before it")
            span = slice(arg["w_addr"], arg["w_addr"] + arg["words"])
            for lane in range(g.lanes):
                last = int(reader[lane, span].max())
                if last and not (arg["wait"] and arg["lane"] == lane and _met(arg["wait_layers"], last)):
                    raise ProgramError(f"{where}: overwrites weights that layer {last} of lane {lane} reads; it "
                                       + (f"waits for {arg['wait_layers']} layers of lane {arg['lane']}"
                                          if arg["wait"] else "does not wait for it"))
            loaded[span] = True
            weights_done += 1
            writer[span] = weights_done
            reader[:, span] = 0
        elif op is Opcode.EMB:
            if _value(arg["op"]) == 1:      # CONFIG
                configured.add(arg["table"])
        elif op is Opcode.FETCH:
            lane = lane_of(arg["lane"])
            items = arg["items"]
            within("items", items, 1, shape.acc_rows)
            join = arg["join"]
            within("join.mode", join["mode"], 0, len(MODES) - 1)
            within("join.vectors", join["vectors"], 1, g.max_vectors)
            within("join.dim", join["dim"], 1, g.max_dim)
            known = tables if tables is not None else (len(configured) if configured else None)
            if known is not None and join["vectors"] - 1 > known:
                raise ProgramError(f"{where}: the join needs {join['vectors'] - 1} tables; {known} are configured")
            source = FetchSource(_value(arg["source"]))
            if source is FetchSource.RANGE:
                within("first + items", arg["first"] + items, 1, arg["count"])
            elif source is FetchSource.SURVIVORS:
                unit = arg["unit"]
                within("unit", unit, 0, g.holders - 1)
                wait = arg["wait_results"]
                if not _met(results[unit], wait) or not results[unit]:
                    raise ProgramError(f"{where}: waits for kept result {wait} of {_holder(g, unit)}; only "
                                       f"{results[unit]} are kept before it")
                number = results[unit] - (results[unit] - wait) % MOD
                if number in released[unit]:
                    raise ProgramError(f"{where}: reads kept result {number} of {_holder(g, unit)} after its "
                                       "release")
                within("first + items", arg["first"] + items, 1, kept_items[unit].get(number, 0))
                awaited[unit].append((position, number))
                if arg["release"]:
                    released[unit].add(number)
            if memory is not None:
                span = (arg["first"], items) if source is FetchSource.RANGE else None
                key = (span, arg["base"], arg["stride"], arg["count"], arg["dense_lines"], join["vectors"],
                       len(configured))
                if key not in records_checked:      # a whole set (SURVIVORS, LIST) is checked once
                    _check_records(g, memory, arg, source, where, configured if tables is None else None)
                    records_checked.add(key)
            mode, vectors, dim = MODES[join["mode"]], join["vectors"], join["dim"]
            stream("dense", lane).produce(where, items, arg["dense_words"], "its dense words")
            stream("index", lane).produce(where, items, 1, "its candidate indices")
            stream("bottom", lane).consume(where, items, -(-dim // shape.cols), "its join job")
            stream("interaction", lane).produce(where, items, output_words(mode, vectors, dim, g.rows),
                                                "its join job")
            pooled.produce(where, items, vectors - 1, "its lookups")
            fetch_ends[lane].append((fetch_ends[lane][-1] if fetch_ends[lane] else 0) + items)
            fetch_at[lane].append(position)
            pooled.consume(where, items, vectors - 1, "its join job")
            if last_fetch is not None:
                absorbed(*last_fetch)
            joins[lane].append({"end": (joins[lane][-1]["end"] if joins[lane] else 0) + items,
                                "job": (mode, vectors, dim)})
            last_fetch = (where, lane)
        elif op is Opcode.LANE:
            lane = lane_of(arg["lane"])
            cmd = arg["cmd"]
            within("cmd.items", cmd["items"], 1, shape.acc_rows)
            if not _met(weights_done, arg["wait_weights"]):
                raise ProgramError(f"{where}: waits for {arg['wait_weights']} WEIGHTS commands; only "
                                   f"{weights_done} come before it")
            for name, done in (("wait_inputs", inputs[lane]), ("wait_layers", layers[lane])):
                if not _met(done, cmd[name]):
                    raise ProgramError(f"{where}: {name} = {cmd[name]}, but only {done} "
                                       f"{name.removeprefix('wait_')} of lane {lane} come before it")
            _check_regions(shape, cmd, where)
            if cmd["op"] == Op.INPUT:
                src = ActSource(_value(arg["src"]))
                kind = "dense" if src is ActSource.DENSE else "interaction"
                if cmd["ktiles"] > arg["src_words"] * (g.rows // shape.rows):
                    raise ProgramError(f"{where}: INPUT of {cmd['ktiles']} words of {shape.rows} from "
                                       f"{arg['src_words']} words of {g.rows} per item")
                stream(kind, lane).consume(where, cmd["items"], arg["src_words"], f"INPUT({src.name})")
                inputs[lane] += 1
                if src is ActSource.INTERACT:
                    inter_taken[lane] += cmd["items"]
                    while open_join[lane] < len(joins[lane]) and \
                            joins[lane][open_join[lane]]["end"] <= inter_taken[lane]:
                        open_join[lane] += 1
            else:
                size = cmd["ntiles"] * (shape.bias_words + cmd["ktiles"] * shape.tile_words)
                if cmd["w_base"] + size > g.engine.weight_words or \
                        not loaded[cmd["w_base"]:cmd["w_base"] + size].all():
                    raise ProgramError(f"{where}: the layer's weights (words {cmd['w_base']} .. "
                                       f"{cmd['w_base'] + size - 1}) are not all loaded by earlier WEIGHTS")
                span = slice(cmd["w_base"], cmd["w_base"] + size)
                latest = int(writer[span].max())
                if not _met(arg["wait_weights"], latest):
                    raise ProgramError(f"{where}: reads weights WEIGHTS command {latest} loads, but waits for "
                                       f"{arg['wait_weights']}")
                if cmd["to_output"]:
                    dst = OutDest(_value(arg["dst"]))
                    kind = "bottom" if dst is OutDest.JOIN else "logits"
                    stream(kind, lane).produce(where, cmd["items"], cmd["ntiles"], f"LAYER to {dst.name}")
                    if dst is OutDest.JOIN:
                        bottom_given[lane] += cmd["items"]
                layers[lane] += 1
                reader[lane, span] = layers[lane]
        elif op is Opcode.SCORE:
            lane = lane_of(arg["lane"])
            items = arg["items"]
            within("items", items, 1, (1 << 16) - 1)
            stream("index", lane).consume(where, items, 1, "SCORE")
            stream("logits", lane).consume(where, items, 1, "SCORE")
            dest = ScoreDest(_value(arg["dest"]))
            first = scored[lane]
            scored[lane] += items
            if dest is not ScoreDest.RSP:
                filtered = dest is ScoreDest.FILTER
                within("unit", arg["unit"], 0, (g.filters if filtered else g.units) - 1)
                unit = g.units + arg["unit"] if filtered else arg["unit"]
                if not open_items[unit] and user.get(unit, (lane,))[0] != lane:
                    _check_order(g, where, unit, lane, user[unit], awaited[unit], fetch_ends[lane], fetch_at[lane],
                                 first)
                open_items[unit] += items
                if filtered and open_items[unit] > g.filter_capacity:
                    raise ProgramError(f"{where}: {open_items[unit]} candidates of one query into a filter unit, "
                                       f"which holds {g.filter_capacity} (filter_capacity)")
                if arg["last"]:
                    within("k", arg["k"], 1, g.filter_capacity if filtered else g.k_max)
                    if arg["keep"]:
                        number = results[unit] + 1
                        if number > 2 and number - 2 not in released[unit]:
                            raise ProgramError(f"{where}: keeps result {number} of {_holder(g, unit)} in the bank "
                                               f"of result {number - 2}, which no earlier FETCH releases")
                        results[unit] = number
                        kept_items[unit][number] = min(arg["k"], open_items[unit])
                    open_items[unit] = 0
                    user[unit] = (lane, results[unit] if arg["keep"] else None)

    if last_fetch is not None:
        absorbed(*last_fetch)
    for kind_stream in [*streams.values(), pooled]:
        kind_stream.match()
    for unit in range(g.holders):
        for number in range(1, results[unit] + 1):
            if number not in released[unit]:
                raise ProgramError(f"End of program: kept result {number} of {_holder(g, unit)} is never released "
                                   "(the result two later would wait for its bank)")


def _check_order(g, where, unit, lane, last, awaited, ends, positions, first):
    """A query from ``lane`` opening on holder ``unit`` whose ``last`` query ``(lane, kept result or None)`` came
    from another lane: the last query kept no result (its order does not matter) or a FETCH waits for its result
    before the FETCH that gives this query's ``first`` candidate of the lane's index stream (the stream's own check
    reports a SCORE beyond the FETCHes)."""
    other, number = last
    given = bisect_right(ends, first)
    if number is None or given >= len(ends):
        return
    if not any(at <= positions[given] and waited >= number for at, waited in awaited):
        raise ProgramError(
            f"{where}: {_holder(g, unit)} takes a query from lane {lane} after one from lane {other}, whose kept "
            f"result {number} no FETCH before command {positions[given]} (this query's) waits for: the unit takes "
            "whichever lane's query comes first, so the results' numbers may not be the program's")


def _holder(g, holder):
    """A holder of kept results, in words."""
    return f"top-k unit {holder}" if holder < g.units else f"filter unit {holder - g.units}"


def _check_regions(shape, cmd, where):
    """A LANE command's activation words (item ``i``'s word ``j`` at ``base + j * stride + i``) and accumulator
    rows within the lane's buffers, and no item's words overlapping another's."""
    items, stride = cmd["items"], cmd["stride"]
    regions = [("in_base", cmd["in_base"], cmd["ktiles"])]
    if cmd["op"] == Op.LAYER:
        if cmd["acc_base"] + items > shape.acc_rows:
            raise ProgramError(f"{where}: accumulator rows {cmd['acc_base']} .. {cmd['acc_base'] + items - 1} are "
                               f"beyond the lane's {shape.acc_rows}")
        if not cmd["to_output"]:
            regions.append(("out_base", cmd["out_base"], -(-cmd["ntiles"] * shape.cols // shape.rows)))
    for name, base, words in regions:
        if words > 1 and stride < items:
            raise ProgramError(f"{where}: stride {stride} is below the {items} items (their words would overlap)")
        if words and base + (words - 1) * stride + items > shape.act_words:
            raise ProgramError(f"{where}: the words from {name} {base} ({words} per item, stride {stride}) go beyond "
                               f"the lane's {shape.act_words} activation words")


def _check_records(g, memory, arg, source, where, configured):
    """The fetched records hold the join's ``vectors - 1`` bags, of configured tables."""
    count, stride = arg["count"], arg["stride"]
    if source is FetchSource.RANGE:
        first, fetched = arg["first"], arg["items"]
    else:
        first, fetched = 0, count
    lines = memory.read(arg["base"] + first * stride, fetched * stride)
    _, counts, entries = decode_records(g, lines, count=fetched, stride=stride, dense_lines=arg["dense_lines"],
                                        dense=0)
    bags = entries["last"].sum(axis=1) if entries["last"].size else np.zeros(fetched, dtype=np.int64)
    wrong = np.flatnonzero(bags != arg["join"]["vectors"] - 1)
    if wrong.size:
        raise ProgramError(f"{where}: candidate {first + int(wrong[0])}'s record holds {int(bags[wrong[0]])} bags; "
                           f"the join takes {arg['join']['vectors'] - 1}")
    if configured:
        held = np.arange(entries["table"].shape[1])[None, :] < counts[:, None]
        named = np.unique(entries["table"][held])
        missing = sorted(set(named.tolist()) - configured)
        if missing:
            raise ProgramError(f"{where}: the records look up table {missing[0]}, which no EMB CONFIG configures")
