"""The embedding driver: every command kind against the scalar packer, the decoders against packed outputs."""

import numpy as np
import pytest
from amaranth.hdl import Const

from rpaccel.cachemodel import COUNTERS
from rpaccel.config import preset
from rpaccel.embedding import EmbeddingLayout, LayoutError, TableSpec
from rpaccel.host.driver.codec import CodecError, to_ints
from rpaccel.host.driver.embedding import EmbeddingEncoder, line_limbs
from rpaccel.rtl.embedding import EmbeddingOp, EmbeddingSystem
from rpaccel.sim.golden.embedding import EmbeddingScript, decode, random_tables

CONFIG = preset("small")


@pytest.fixture(scope="module")
def encoder():
    return EmbeddingEncoder(CONFIG)


def _layout(encoder):
    return EmbeddingLayout(encoder.geometry, [TableSpec(30, 16, 4, 300, 10), TableSpec(20, 32, 6, 900, 9)])


def _unit(encoder, op, table, arg):
    return const_bits(EmbeddingSystem.command_layout(encoder.layouts),
                        {"mem": 0, "body": {"unit": {"op": op, "table": table, "arg": arg}}})


def _line(data):
    return int.from_bytes(np.asarray(data, dtype=np.int8).tobytes(), "little")


def test_commands_match_the_scalar_packer(encoder):
    shape = EmbeddingSystem.command_layout(encoder.layouts)
    layout = _layout(encoder)
    lb = encoder.geometry.line_bytes
    rng = np.random.default_rng(1)
    data = random_tables(rng, layout)
    # Memory writes of a table, and a read.
    lines = data[1].reshape(-1, lb)
    assert to_ints(encoder.load_table(layout, data, 1)) == [
        const_bits(shape, {"mem": 1, "body": {"mem": {"write": 1, "addr": layout.mem_base[1] + i, "length": 0,
                                                        "data": _line(line)}}}) for i, line in enumerate(lines)]
    assert to_ints(encoder.memory_reads([5, 9])) == [
        const_bits(shape, {"mem": 1, "body": {"mem": {"write": 0, "addr": a, "length": 0, "data": 0}}})
        for a in (5, 9)]
    # Unit commands.
    assert to_ints(encoder.configure(layout)) == [_unit(encoder, EmbeddingOp.CONFIG, t, {"config": {
        "rows": s.rows, "static_rows": s.static_rows, "static_base": layout.static_base[t],
        "mem_base": layout.mem_base[t], "row_lines": layout.row_lines[t].bit_length() - 1, "m": s.m, "s": s.s}})
        for t, s in enumerate(layout.tables)]
    assert to_ints(encoder.flush()) == [_unit(encoder, EmbeddingOp.FLUSH, 0, {"counters": {"clear": 0}})]
    assert to_ints(encoder.preload(1)) == [_unit(encoder, EmbeddingOp.PRELOAD, 1, {"counters": {"clear": 0}})]
    assert to_ints(encoder.read_counters(clear=True)) == [
        _unit(encoder, EmbeddingOp.COUNTERS, 0, {"counters": {"clear": 1}})]
    row = rng.integers(-128, 128, 16).astype(np.int8)
    assert to_ints(encoder.update(0, 7, row.reshape(-1, lb))) == [
        _unit(encoder, EmbeddingOp.UPDATE, 0, {"update": {"id": 7, "line": j, "data": _line(row[j * lb:(j + 1) * lb])}})
        for j in range(16 // lb)]
    tables, ids = np.array([0, 0, 1]), np.array([3, 29, 19])
    last, end = np.array([0, 1, 1]), np.array([0, 0, 1])
    assert to_ints(encoder.lookups(tables, ids, last, end)) == [
        _unit(encoder, EmbeddingOp.LOOKUP, int(t), {"lookup": {"id": int(i), "last": int(a), "end": int(e)}})
        for t, i, a, e in zip(tables, ids, last, end)]


def test_encoder_errors(encoder):
    with pytest.raises(CodecError, match=r"row 1: payload.body.unit.arg.lookup.id = -1 does not fit"):
        encoder.lookups([0, 0], [1, -1], 0, 0)
    with pytest.raises(LayoutError, match=r"Memory lines must be given as \(n, 16\) bytes"):
        encoder.memory_writes([0], np.zeros((1, 8)))
    other = EmbeddingEncoder(preset("tiny"))
    with pytest.raises(LayoutError, match="another geometry"):
        other.configure(_layout(encoder))


def test_outputs_decode(encoder):
    rng = np.random.default_rng(2)
    lay, g = encoder.layouts, encoder.geometry
    vectors = rng.integers(-128, 128, (6, g.row_bytes))
    tables, ends = rng.integers(0, g.tables, 6), rng.integers(0, 2, 6)
    words = [const_bits(lay.pooled, {"table": int(t), "end": int(e), "data": v.tolist()})
             for t, e, v in zip(tables, ends, vectors)]
    got_vectors, got_tables, got_ends = encoder.decode_pooled(words)
    assert np.array_equal(got_vectors, vectors) and np.array_equal(got_tables, tables)
    assert got_ends.tolist() == ends.astype(bool).tolist()
    snapshots = [{name: int(rng.integers(0, 1 << 32)) for name in COUNTERS} for _ in range(3)]
    assert encoder.decode_counters([const_bits(lay.counters, s) for s in snapshots]) == snapshots
    assert line_limbs(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 255]], dtype=np.uint8)).tolist() == [[1, 255]]


def test_script_words_are_its_commands_in_order():
    script = EmbeddingScript(CONFIG)
    layout = _layout(script.encoder)
    rng = np.random.default_rng(3)
    script.load(layout, random_tables(rng, layout))
    script.lookup([0, 1], [0, 2, 3], [4, 5, 6])
    script.counters_read()
    words = script.words
    encoder = script.encoder
    expected = np.concatenate([encoder.load_table(layout, script.data, 0), encoder.load_table(layout, script.data, 1),
                               encoder.configure(layout), encoder.flush(), encoder.preload(0), encoder.preload(1),
                               encoder.lookups([0, 0, 1], [4, 5, 6], [0, 1, 1], [0, 0, 1]),
                               encoder.read_counters()])
    assert np.array_equal(words, expected) and script.commands == to_ints(expected)
    # decode() reads packed outputs back through the encoder.
    result = decode(script, [], [const_bits(encoder.layouts.counters, dict.fromkeys(COUNTERS, 7))], [])
    assert result.pooled.shape == (0, encoder.geometry.row_bytes) and result.counters == [dict.fromkeys(COUNTERS, 7)]


def const_bits(shape, value):
    """The bits of Amaranth's own constant of ``value`` (the oracle of the packed words)."""
    return Const.cast(shape.const(value)).value
