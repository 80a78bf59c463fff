"""The chip's commands and responses, to and from packed words: the one place they are encoded and decoded.

:class:`ChipEncoder` has one method per opcode (docs/chip.md, "Commands"); each takes its fields as scalars or
arrays (a batch of commands of one opcode in one call: ``mem_write`` of many lines, ``lane`` of many MLP
commands) and returns ``(n, limbs)`` packed words of :meth:`~rpaccel.rtl.accel.isa.ChipGeometry.command_layout`,
after checking every field against the configuration (:class:`ChipCommandError` names the command and the
field). :func:`decode_commands` reads words back into *records* ``{"op", "tag", "arg"}`` (``arg`` the opcode's
fields), the form :meth:`ChipEncoder.encode` takes, the compiler builds and the static checker reads.
:func:`decode_responses` turns response words into :class:`Responses`, columns with helpers (rankings, logits,
counters, errors as :class:`ChipError`).

Example::

    encoder = ChipEncoder(config)
    words = np.concatenate([encoder.split(2), encoder.mem_write(base, lines), encoder.counters(clear=True)])
    responses = decode_responses(encoder.geometry, rsp_words)
    responses.ranking(tag=3)         # [(score, index), ...], best first
"""

import re

import numpy as np

from ....rtl.accel.isa import (
    ActSource,
    ChipGeometry,
    Counter,
    ErrorCode,
    FetchSource,
    Opcode,
    OutDest,
    ResponseKind,
    ScoreDest,
)
from ....rtl.embedding import EmbeddingOp
from ....rtl.interaction import MODES
from ....rtl.mlp import Op
from ..codec import CodecError, codec, from_ints
from ..embedding import UnitCommands, line_limbs

__all__ = ["ChipCommandError", "ChipEncoder", "ChipError", "Responses", "decode_commands", "decode_responses",
           "encode_responses", "geometry_of", "response_codec"]

#: The ``arg`` member of each opcode (NOP and SYNC carry none).
MEMBERS = {Opcode.MEM_WRITE: "mem_write", Opcode.MEM_READ: "mem_read", Opcode.SPLIT: "split",
           Opcode.WEIGHTS: "weights", Opcode.EMB: "emb", Opcode.FETCH: "fetch", Opcode.LANE: "lane",
           Opcode.SCORE: "score", Opcode.COUNTERS: "counters"}


class ChipCommandError(ValueError):
    """A command the chip would refuse, or whose field does not fit (the message names the command and field)."""


def geometry_of(config):
    """The :class:`~rpaccel.rtl.accel.isa.ChipGeometry` of ``config`` (an ``AccelConfig`` or a geometry)."""
    return config if isinstance(config, ChipGeometry) else ChipGeometry(config)


def _value(item):
    """An enum member's value (members in a list or tuple too: an array of values)."""
    if isinstance(item, (list, tuple)):
        return np.array([_value(member) for member in item], dtype=np.int64)
    return item.value if hasattr(item, "value") else item


def _stack(values):
    """Columns from a list of equally structured dicts (enum members become their values)."""
    first = values[0]
    if isinstance(first, dict):
        return {name: _stack([value[name] for value in values]) for name in first}
    values = [_value(value) for value in values]
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:   # a field wider than 64 bits (a memory line): Python ints
        return np.array(values, dtype=object)


def _structure(value):
    """The field names of a record's argument, nested (records of one structure pack as one batch)."""
    if isinstance(value, dict):
        return tuple((name, _structure(item)) for name, item in value.items())
    return None


def _row_text(count, row):
    return f" (command {row} of the batch)" if count > 1 else ""


class ChipEncoder:
    """Packed command words of the chip of a configuration, checked field by field.

    Every method returns ``(n, limbs)`` uint64 words (see :mod:`rpaccel.host.driver.codec`); fields given as
    arrays make a batch of ``n`` commands of one opcode (scalars repeat). Concatenate the words in the order they
    are to be sent.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig or rpaccel.rtl.accel.isa.ChipGeometry

    Attributes
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    unit : rpaccel.host.driver.embedding.UnitCommands
        The embedding unit's commands, for :meth:`emb`.
    width : int
        Bits of a command word.
    """

    def __init__(self, config):
        self.geometry = g = geometry_of(config)
        self.unit = UnitCommands(g.emb)
        self._codec = codec(g.command_layout())
        self.width = self._codec.width
        self.mem_lines = 1 << g.addr_bits
        self._checks = {Opcode.MEM_WRITE: self._check_mem_write, Opcode.MEM_READ: self._check_mem_read,
                        Opcode.SPLIT: self._check_split, Opcode.WEIGHTS: self._check_weights,
                        Opcode.EMB: self._check_emb, Opcode.FETCH: self._check_fetch, Opcode.LANE: self._check_lane,
                        Opcode.SCORE: self._check_score}

    # Packing ---------------------------------------------------------------------------------------------------

    def _emit(self, op, arg, count, tag):
        """Check and pack ``count`` commands ``op`` with ``arg`` columns (``None`` for NOP and SYNC)."""
        if op in self._checks:
            self._checks[op](arg, count)
        member = MEMBERS.get(op)
        try:
            return self._codec.pack({"op": op.value, "tag": tag,
                                     "arg": {member: arg} if member else {"counters": {"clear": 0}}}, count=count)
        except CodecError as error:
            text = re.sub(r"payload\.(arg\.\w+\.)?", "", str(error))
            raise ChipCommandError(f"{op.name}: {text}") from None

    def _fail(self, op, name, values, bad, count, what):
        row = int(np.flatnonzero(bad)[0])
        raise ChipCommandError(f"{op.name}: {name} = {int(values[row])} {what}{_row_text(count, row)}")

    def _within(self, op, name, values, low, high, count, *, where=None):
        """Raise unless every value (of the rows in ``where``) lies in ``[low, high]``."""
        values = np.broadcast_to(np.asarray(values, dtype=np.int64), (count,))
        bad = (values < low) | (values > high)
        if where is not None:
            bad &= np.broadcast_to(np.asarray(where, dtype=bool), (count,))
        if bad.any():
            self._fail(op, name, values, bad, count, f"is outside [{low}, {high}]")

    def _count(self, op, /, **fields):
        """Rows of a batch: the common length of the fields given as arrays (1 if all are scalars)."""
        lengths = {name: np.shape(value)[0] for name, value in fields.items() if np.ndim(value)}
        if len(set(lengths.values())) > 1:
            raise ChipCommandError(f"{op.name}: fields of different lengths {lengths}")
        return next(iter(lengths.values()), 1)

    def _items(self):
        return self.geometry.engine.max_acc_rows

    # Commands --------------------------------------------------------------------------------------------------

    def nop(self, count=1, *, tag=0):
        """``count`` NOP commands (fillers; no answer)."""
        return self._emit(Opcode.NOP, None, count, tag)

    def sync(self, *, tag=0):
        """SYNC: wait until every earlier command has finished and every unit is idle; answers DONE."""
        return self._emit(Opcode.SYNC, None, 1, tag)

    def mem_write(self, addr, lines, *, tag=0):
        """MEM_WRITE of ``lines`` (``(n, line_bytes)`` bytes, int8 or uint8) to memory lines ``addr``, ``addr + 1``,
        ... (``addr`` a scalar) or to the lines of the array ``addr``."""
        lines = np.asarray(lines)
        if lines.ndim != 2 or lines.shape[1] != self.geometry.line_bytes:
            raise ChipCommandError(f"MEM_WRITE: lines must be given as (n, {self.geometry.line_bytes}) bytes, "
                                   f"not shape {lines.shape}")
        addr = np.asarray(addr, dtype=np.int64)
        addr = addr + np.arange(len(lines)) if addr.ndim == 0 else addr
        if addr.shape != (len(lines),):
            raise ChipCommandError(f"MEM_WRITE: {len(lines)} lines need as many addresses, not {addr.shape}")
        return self._emit(Opcode.MEM_WRITE, {"addr": addr, "data": self.unit.lines(lines)}, len(lines), tag)

    def mem_read(self, addr, lines=1, *, tag=0):
        """MEM_READ of ``lines`` lines from line ``addr``; answers one DATA per line (``last`` on the final)."""
        count = self._count(Opcode.MEM_READ, addr=addr, lines=lines)
        self._within(Opcode.MEM_READ, "lines", lines, 1, 1 << 16, count)
        return self._emit(Opcode.MEM_READ, {"addr": addr, "length": np.asarray(lines) - 1}, count, tag)

    def split(self, n, *, tag=0):
        """SPLIT the array into ``n`` sub-arrays (one of the configuration's splits)."""
        return self._emit(Opcode.SPLIT, {"n": n}, 1, tag)

    def weights(self, mem_addr, w_addr, words, *, wait=0, lane=0, wait_layers=0, tag=0):
        """WEIGHTS: copy ``words`` weight words staged at memory line ``mem_addr`` to the weight buffer from word
        ``w_addr``; with ``wait``, first until lane ``lane`` has completed ``wait_layers`` layers."""
        arg = {"mem_addr": mem_addr, "w_addr": w_addr, "words": words, "wait": wait, "lane": lane,
               "wait_layers": wait_layers}
        return self._emit(Opcode.WEIGHTS, arg, self._count(Opcode.WEIGHTS, **arg), tag)

    def emb(self, columns, count, *, tag=0):
        """EMB commands from embedding unit command ``columns`` (as :class:`UnitCommands` gives them with
        ``count``); LOOKUP and COUNTERS are refused (the fetcher and COUNTERS do those)."""
        return self._emit(Opcode.EMB, columns, count, tag)

    def emb_config(self, layout, *, tag=0):
        """EMB CONFIG of every table of ``layout`` (an :class:`~rpaccel.embedding.EmbeddingLayout`)."""
        return self.emb(*self.unit.configure(layout), tag=tag)

    def emb_preload(self, table, *, tag=0):
        """EMB PRELOAD of the static rows of ``table``."""
        return self.emb(*self.unit.preload(table), tag=tag)

    def emb_flush(self, *, tag=0):
        """EMB FLUSH of the dynamic cache."""
        return self.emb(*self.unit.flush(), tag=tag)

    def emb_update(self, table, row, lines, *, tag=0):
        """EMB UPDATE of row ``row`` of ``table`` with ``lines``, one command per line."""
        return self.emb(*self.unit.update(table, row, lines), tag=tag)

    def fetch(self, lane, items, *, base, stride, count, dense_lines, dense_words, join, source=FetchSource.RANGE,
              first=0, list_addr=0, unit=0, wait_results=0, release=0, tag=0):
        """FETCH ``items`` candidates of the record set ``(base, stride, count, dense_lines)`` to ``lane``: their
        ``dense_words`` words each, indices and lookups, and a join job with ``join`` (``{mode, vectors, dim, m,
        s}``, ``mode`` a name of :data:`rpaccel.rtl.interaction.MODES` or its number). ``source``
        (:class:`~rpaccel.rtl.accel.isa.FetchSource`): ``first`` onwards of the set (``RANGE``), of kept result
        ``wait_results`` of top-k unit ``unit`` (``SURVIVORS``, ``release`` on the last fetch reading it), or
        the 16-bit list at line ``list_addr`` (``LIST``)."""
        join = dict(join)
        if isinstance(join.get("mode"), str):
            if join["mode"] not in MODES:
                raise ChipCommandError(f"FETCH: join mode must be one of {', '.join(MODES)}, not {join['mode']!r}")
            join["mode"] = MODES.index(join["mode"])
        arg = {"lane": lane, "source": _value(source), "first": first, "list_addr": list_addr, "unit": unit,
               "wait_results": wait_results, "release": release, "items": items, "base": base, "stride": stride,
               "count": count, "dense_lines": dense_lines, "dense_words": dense_words}
        rows = self._count(Opcode.FETCH, **arg, **join)
        return self._emit(Opcode.FETCH, {**arg, "join": join}, rows, tag)

    def lane(self, lane, cmd, *, src=ActSource.DENSE, src_words=0, dst=OutDest.JOIN, wait_weights=0, tag=0):
        """LANE: MLP engine commands ``cmd`` (one :class:`~rpaccel.rtl.mlp.MLPCommand` dict, a list of them, or
        columns) for ``lane``; an INPUT takes ``src_words`` words of ``rows`` elements per item from ``src``, an
        output layer sends its results to ``dst``; each waits for ``wait_weights`` WEIGHTS commands."""
        if isinstance(cmd, (list, tuple)):
            cmd = _stack(cmd)
        arg = {"lane": lane, "wait_weights": wait_weights, "src": _value(src), "src_words": src_words,
               "dst": _value(dst)}
        rows = self._count(Opcode.LANE, **arg, op=cmd["op"], items=cmd["items"])
        return self._emit(Opcode.LANE, {**arg, "cmd": cmd}, rows, tag)

    def score(self, lane, items, *, dest=ScoreDest.TOPK, unit=0, last=0, k=0, keep=0, report=0, tag=0):
        """SCORE: take ``items`` logits and indices of ``lane`` to top-k unit ``unit`` (``dest`` TOPK; ``last``
        closes the query with ``k``, then ``keep`` keeps the result for FETCH and ``report`` answers it as RANK)
        or to the response stream (``dest`` RSP, one LOGIT each)."""
        arg = {"lane": lane, "dest": _value(dest), "unit": unit, "items": items, "last": last, "k": k,
               "keep": keep, "report": report}
        return self._emit(Opcode.SCORE, arg, self._count(Opcode.SCORE, **arg), tag)

    def counters(self, *, clear=False, tag=0):
        """COUNTERS: answer every counter (one COUNTER each, ``last`` on the final), then clear them if
        ``clear``."""
        return self._emit(Opcode.COUNTERS, {"clear": int(clear)}, 1, tag)

    def encode(self, records):
        """Words of command ``records`` (``{"op", "tag", "arg"}`` dicts as :func:`decode_commands` gives them and
        the compiler builds), in order; the records of one opcode (and one union member) are packed as one batch
        wherever they lie, and the words put back in the records' order."""
        records = list(records)
        groups = {}
        for index, record in enumerate(records):
            groups.setdefault((_value(record["op"]), _structure(record["arg"])), []).append(index)
        words = np.zeros((len(records), self._codec.limbs), dtype=np.uint64)
        for (op, _), rows in groups.items():
            op, run = Opcode(op), [records[row] for row in rows]
            arg = _stack([record["arg"] for record in run]) if op in MEMBERS else None
            words[rows] = self._emit(op, arg, len(run), _stack([record.get("tag", 0) for record in run]))
        return words

    # Checks beyond the field widths: what the controller would refuse -----------------------------------------

    def _check_mem_write(self, arg, count):
        self._within(Opcode.MEM_WRITE, "addr", arg["addr"], 0, self.mem_lines - 1, count)

    def _check_mem_read(self, arg, count):
        end = np.asarray(arg["addr"], dtype=np.int64) + np.asarray(arg["length"], dtype=np.int64)
        self._within(Opcode.MEM_READ, "addr + length", end, 0, self.mem_lines - 1, count)

    def _check_split(self, arg, count):
        values = np.broadcast_to(np.asarray(arg["n"], dtype=np.int64), (count,))
        bad = ~np.isin(values, self.geometry.config.splits)
        if bad.any():
            self._fail(Opcode.SPLIT, "n", values, bad, count,
                       f"is not one of the configuration's splits {self.geometry.config.splits}")

    def _check_weights(self, arg, count):
        g, op = self.geometry, Opcode.WEIGHTS
        words = np.asarray(arg["words"], dtype=np.int64)
        self._within(op, "words", words, 1, g.engine.weight_words, count)
        self._within(op, "w_addr + words", np.asarray(arg["w_addr"]) + words, 1, g.engine.weight_words, count)
        lines = -(-words * g.engine.word_bytes // g.line_bytes)
        self._within(op, "mem_addr + lines", np.asarray(arg["mem_addr"]) + lines, 1, self.mem_lines, count)
        self._within(op, "lane", arg["lane"], 0, g.lanes - 1, count)

    def _check_emb(self, arg, count):
        ops = np.broadcast_to(np.asarray(arg["op"], dtype=np.int64), (count,))
        bad = np.isin(ops, [EmbeddingOp.LOOKUP.value, EmbeddingOp.COUNTERS.value])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ChipCommandError(f"EMB: op {EmbeddingOp(int(ops[row])).name} is not an EMB command (the fetcher "
                                   f"sends LOOKUPs, COUNTERS reads the counters){_row_text(count, row)}")
        self._within(Opcode.EMB, "table", arg["table"], 0, self.geometry.emb.tables - 1, count)

    def _check_fetch(self, arg, count):
        g, op = self.geometry, Opcode.FETCH
        self._within(op, "lane", arg["lane"], 0, g.lanes - 1, count)
        self._within(op, "items", arg["items"], 1, self._items(), count)
        self._within(op, "source", arg["source"], 0, len(FetchSource) - 1, count)
        source = np.asarray(arg["source"])
        survivors = source == FetchSource.SURVIVORS.value
        self._within(op, "unit", arg["unit"], 0, g.holders - 1, count, where=survivors)
        first, items = np.asarray(arg["first"], dtype=np.int64), np.asarray(arg["items"], dtype=np.int64)
        self._within(op, "first + items", first + items, 1, arg["count"], count, where=source == 0)
        from_topk = np.asarray(arg["unit"]) < g.units
        self._within(op, "first + items", first + items, 1, g.k_max, count, where=survivors & from_topk)
        self._within(op, "first + items", first + items, 1, g.filter_capacity, count, where=survivors & ~from_topk)
        self._within(op, "stride", arg["stride"], np.asarray(arg["dense_lines"]) + 1, 1 << 16, count)
        end = np.asarray(arg["base"], dtype=np.int64) + np.asarray(arg["count"]) * np.asarray(arg["stride"])
        self._within(op, "base + count * stride", end, 0, self.mem_lines, count)
        self._within(op, "dense_words * rows", np.asarray(arg["dense_words"]) * g.rows, 0,
                     np.asarray(arg["dense_lines"]) * g.line_bytes + g.rows - 1, count)
        join = arg["join"]
        self._within(op, "join.mode", join["mode"], 0, len(MODES) - 1, count)
        self._within(op, "join.vectors", join["vectors"], 1, g.max_vectors, count)
        self._within(op, "join.dim", join["dim"], 1, g.max_dim, count)

    def _check_lane(self, arg, count):
        g, op = self.geometry, Opcode.LANE
        self._within(op, "lane", arg["lane"], 0, g.lanes - 1, count)
        self._within(op, "cmd.items", arg["cmd"]["items"], 1, self._items(), count)
        inputs = np.asarray(arg["cmd"]["op"]) == Op.INPUT
        self._within(op, "src_words", arg["src_words"], 1, 255, count, where=inputs)

    def _check_score(self, arg, count):
        g, op = self.geometry, Opcode.SCORE
        self._within(op, "lane", arg["lane"], 0, g.lanes - 1, count)
        self._within(op, "items", arg["items"], 1, (1 << 16) - 1, count)
        dest = np.asarray(arg["dest"])
        self._within(op, "dest", dest, 0, len(ScoreDest) - 1, count)
        topk, filtered = dest == ScoreDest.TOPK.value, dest == ScoreDest.FILTER.value
        self._within(op, "unit", arg["unit"], 0, g.units - 1, count, where=topk)
        self._within(op, "unit", arg["unit"], 0, g.filters - 1, count, where=filtered)
        closes = np.asarray(arg["last"]) != 0
        self._within(op, "k", arg["k"], 1, g.k_max, count, where=topk & closes)
        self._within(op, "k", arg["k"], 1, g.filter_capacity, count, where=filtered & closes)


def decode_commands(geometry, words):
    """Command records ``{"op", "tag", "arg"}`` of packed command ``words``: ``op`` an
    :class:`~rpaccel.rtl.accel.isa.Opcode` (an ``int`` if unknown), ``arg`` the opcode's fields (``{}`` for NOP,
    SYNC and unknown opcodes) with enum fields as members."""
    command = codec(geometry_of(geometry).command_layout())
    if not (isinstance(words, np.ndarray) and words.ndim == 2):
        words = from_ints(words, command.width)
    records = []
    for value in command.unpack_values(words):
        member = MEMBERS.get(value["op"])
        arg = value["arg"][member] if member else {}
        if member == "emb":     # the unit command's own union: the member its op uses
            arg = {**arg, "arg": {_EMB_MEMBERS.get(arg["op"], "counters"): arg["arg"][_EMB_MEMBERS.get(
                arg["op"], "counters")]}}
        records.append({"op": value["op"], "tag": value["tag"], "arg": arg})
    return records


# The argument member of each embedding unit op (PRELOAD and FLUSH carry none: the all-zero ``counters``).
_EMB_MEMBERS = {EmbeddingOp.LOOKUP: "lookup", EmbeddingOp.CONFIG: "config", EmbeddingOp.UPDATE: "update",
                EmbeddingOp.COUNTERS: "counters"}


# Responses ----------------------------------------------------------------------------------------------------------

class ChipError(Exception):
    """A command the chip refused (an ERROR response).

    Attributes
    ----------
    op : rpaccel.rtl.accel.isa.Opcode or int
        The refused command's opcode (an ``int`` if the chip does not know it).
    code : rpaccel.rtl.accel.isa.ErrorCode
    detail : int
        The offending value.
    tag : int
        The refused command's tag.
    """

    def __init__(self, geometry, op, code, detail, tag):
        self.op, self.code, self.detail, self.tag = op, code, detail, tag
        name = op.name if isinstance(op, Opcode) else f"opcode {op}"
        super().__init__(f"{name} refused: {_reason(geometry, op, code, detail)}")


def _reason(g, op, code, d):
    """Why the chip refused a command, from the ERROR's code and detail (the controller's and the fetcher's)."""
    reasons = {
        ErrorCode.OPCODE: f"opcode {d} is not one the chip knows",
        ErrorCode.LANE: f"lane {d} is not active in the current split",
        ErrorCode.SPLIT: f"split {d} is not one of {g.config.splits}",
        ErrorCode.K: f"k {d} is outside [1, {g.k_max}] (a top-k unit) or [1, {g.filter_capacity}] (a filter unit)",
        ErrorCode.ITEMS: f"{d} items is none or more than a lane's accumulator rows",
        ErrorCode.UNIT: f"unit {d} does not exist (the chip has {g.units} top-k and {g.filters} filter units)",
        ErrorCode.WEIGHTS: f"weight word {d} is beyond the weight buffer or in a page no WEIGHTS has loaded",
        ErrorCode.TABLE: f"the join needs {d} tables, more than are configured" if op is Opcode.FETCH
        else f"table {d} is beyond the chip's {g.emb.tables} (emb_tables)",
        ErrorCode.INDEX: f"candidate {d} (an index, or first + items) is outside the candidate set",
        ErrorCode.ADDRESS: f"an access from line {d} goes beyond the memory's {1 << g.addr_bits} lines",
        ErrorCode.FIELD: f"a field holds {d}, outside its range",
    }
    return reasons.get(code, f"error code {code} (detail {d})")


class Responses:
    """Response words as columns, with helpers.

    Attributes
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    kind, tag, last, code, index, score : numpy.ndarray
        One int64 value per response (``kind`` a :class:`~rpaccel.rtl.accel.isa.ResponseKind` value).
    data : numpy.ndarray
        ``(n, line_bytes)`` uint8: the line of a DATA response.
    """

    def __init__(self, geometry, columns):
        self.geometry = geometry_of(geometry)
        for name in ("kind", "tag", "last", "code", "index", "score"):
            setattr(self, name, np.asarray(columns[name], dtype=np.int64))
        data = np.asarray(columns["data"])
        if data.ndim == 1:
            data = data[:, None]
        lb = self.geometry.line_bytes
        self.data = np.ascontiguousarray(data.astype(np.uint64)).view(np.uint8).reshape(len(self.kind), -1)[:, :lb]

    def __len__(self):
        return len(self.kind)

    def _rows(self, kind, tag=None):
        mask = self.kind == kind.value
        if tag is not None:
            mask &= self.tag == tag
        return np.flatnonzero(mask)

    def records(self, tag):
        """Every response of ``tag`` in order, as ``(kind, last, code, index, score)`` tuples (DATA lines
        aside)."""
        rows = np.flatnonzero(self.tag == tag)
        return list(zip(*(getattr(self, name)[rows].tolist() for name in ("kind", "last", "code", "index",
                                                                            "score"))))

    def ranking(self, tag):
        """The RANK responses of ``tag``: ``[(score, index), ...]``, best first."""
        rows = self._rows(ResponseKind.RANK, tag)
        return list(zip(self.score[rows].tolist(), self.index[rows].tolist()))

    def logits(self, tag):
        """The LOGIT responses of ``tag``: ``(indices, scores)`` int64 arrays in item order."""
        rows = self._rows(ResponseKind.LOGIT, tag)
        return self.index[rows], self.score[rows]

    def lines(self, tag=None):
        """The DATA responses (of ``tag``): ``(n, line_bytes)`` uint8 lines."""
        return self.data[self._rows(ResponseKind.DATA, tag)]

    def done(self, tag=None):
        """How many DONE responses (of ``tag``) there are."""
        return len(self._rows(ResponseKind.DONE, tag))

    def counters(self, tag=None):
        """``{Counter name: value}`` of the COUNTER responses (of ``tag``; a later snapshot overrides)."""
        rows = self._rows(ResponseKind.COUNTER, tag)
        names = {member.value: member.name for member in Counter}
        lanes, units = self.geometry.lanes, self.geometry.units
        out = {}
        for index, value in zip(self.index[rows].tolist(), (self.score[rows] & 0xFFFF_FFFF).tolist()):
            if Counter.BUSY_LANE0.value <= index < Counter.BUSY_LANE0.value + lanes:
                name = f"BUSY_LANE{index - Counter.BUSY_LANE0.value}"
            elif Counter.BUSY_TOPK0.value <= index < Counter.BUSY_TOPK0.value + units:
                name = f"BUSY_TOPK{index - Counter.BUSY_TOPK0.value}"
            elif Counter.BUSY_FILTER0.value <= index < Counter.BUSY_FILTER0.value + self.geometry.filters:
                name = f"BUSY_FILTER{index - Counter.BUSY_FILTER0.value}"
            else:
                name = names.get(index, f"COUNTER{index}")
            out[name] = value
        return out

    def errors(self):
        """Every ERROR response as a :class:`ChipError`, in order."""
        rows = self._rows(ResponseKind.ERROR)
        errors = []
        for row in rows.tolist():
            op = int(self.index[row])
            op = Opcode(op) if op in {member.value for member in Opcode} else op
            code = int(self.code[row])
            code = ErrorCode(code) if code in {member.value for member in ErrorCode} else code
            errors.append(ChipError(self.geometry, op, code, int(self.score[row]), int(self.tag[row])))
        return errors


def response_codec(geometry):
    """The codec of the chip's response words."""
    return codec(geometry_of(geometry).response_layout())


def decode_responses(geometry, words):
    """:class:`Responses` of response ``words`` (``(n, limbs)`` words or Python ints)."""
    rsp = response_codec(geometry)
    if not (isinstance(words, np.ndarray) and words.ndim == 2):
        words = from_ints(words, rsp.width)
    return Responses(geometry, rsp.unpack(words))


def encode_responses(geometry, columns, count):
    """Response words of ``columns`` (any of ``kind, tag, last, code, index, score, data``; missing ones are 0):
    what a golden model says the chip answers."""
    g = geometry_of(geometry)
    full = {"kind": 0, "tag": 0, "last": 0, "code": 0, "index": 0, "score": 0, "data": 0}
    full.update(columns)
    if np.ndim(full["data"]) == 2 and np.asarray(full["data"]).dtype == np.uint8:
        full["data"] = UnitCommands(g.emb).lines(full["data"])
    elif 8 * g.line_bytes > 64 and np.ndim(full["data"]) == 0:
        full["data"] = np.zeros((count, line_limbs(np.zeros((1, g.line_bytes))).shape[1]), dtype=np.uint64)
    return response_codec(g).pack(full, count=count)
