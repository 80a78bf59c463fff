"""The codec against Amaranth's own constants (the oracle: ``Layout.const`` and ``from_bits``), on random layouts
and on edge cases."""

import numpy as np
import pytest
from amaranth.hdl import Const, Shape, ShapeCastable, signed, unsigned
from amaranth.lib import data, enum

from rpaccel.host.driver.codec import (
    Codec,
    CodecError,
    codec,
    format_hex,
    from_ints,
    limbs,
    pack,
    parse_hex,
    to_ints,
    unpack,
)


class Op(enum.Enum, shape=2):
    ADD = 0
    MUL = 3


class Mode(enum.Enum, shape=signed(3)):
    LOW = -4
    ZERO = 0
    HIGH = 3


class Quarter(enum.Enum, shape=2):
    # Every 2-bit value is a member: an unused union member holding one unpacks in the oracle too.
    A = 0
    B = 1
    C = 2
    D = 3


class Inner(data.Struct):
    a: signed(4)
    b: unsigned(3)


class Either(data.Union):
    small: unsigned(5)
    big: signed(12)


def const_bits(shape, value):
    """The bits of Amaranth's constant of ``value`` (in the format of :meth:`Codec.pack_value`), unsigned."""
    mask = (1 << Shape.cast(shape).width) - 1
    if isinstance(shape, ShapeCastable):
        return Const.cast(shape.const(value)).value & mask
    return Const(value, shape).value & mask


def const_value(shape, bits):
    """The Python value Amaranth reads from the bits of ``shape`` (dicts for structs and unions, lists for
    arrays, ints and enum members at the leaves)."""
    return _read(data.StructLayout({"v": shape}).from_bits(bits)["v"])


def _read(value):
    if isinstance(value, data.Const):
        layout = data.Layout.cast(value.shape())
        if isinstance(layout, data.ArrayLayout):
            return [_read(value[i]) for i in range(layout.length)]
        return {name: _read(value[name]) for name, _ in layout}
    return value


# Random layouts and values ------------------------------------------------------------------------------------------

_WIDTHS = (1, 2, 3, 7, 8, 13, 16, 31, 32, 33, 63, 64, 65, 100, 128, 257)


def random_shape(rng, depth=0):
    """A random shape: plain signed/unsigned of every awkward width, enums, structs, unions, arrays, nested."""
    kind = rng.integers(0, 7) if depth < 3 else rng.integers(0, 3)
    if kind == 0:
        return unsigned(int(rng.choice(_WIDTHS)))
    if kind == 1:
        return signed(int(rng.choice(_WIDTHS)))
    if kind == 2:
        # (Enums with gaps and signed enums are tested on their own: the oracle cannot unpack a value that is no
        # member, nor a negative member.)
        return [Quarter, Inner, Either][rng.integers(0, 3)]
    if kind in (3, 4):
        fields = {f"f{i}": random_shape(rng, depth + 1) for i in range(rng.integers(1, 5))}
        return data.StructLayout(fields)
    if kind == 5:
        fields = {f"u{i}": random_shape(rng, depth + 1) for i in range(rng.integers(1, 4))}
        return data.UnionLayout(fields)
    return data.ArrayLayout(random_shape(rng, depth + 1), int(rng.integers(1, 5)))


def random_value(rng, shape, arm=None):
    """A random Python value of ``shape`` (in the format of :meth:`Codec.pack_value`), extremes favoured.

    Unions take a random member, or member ``arm`` (modulo their members) if given.
    """
    layout = shape if isinstance(shape, data.Layout) else None
    if isinstance(shape, type) and issubclass(shape, data.View):
        layout = data.Layout.cast(shape)
    if isinstance(layout, data.ArrayLayout):
        return [random_value(rng, layout.elem_shape, arm) for _ in range(layout.length)]
    if isinstance(layout, data.UnionLayout):
        members = list(layout)
        name, field = members[rng.integers(0, len(members)) if arm is None else arm % len(members)]
        return {name: random_value(rng, field.shape, arm)}
    if layout is not None:
        return {name: random_value(rng, field.shape, arm) for name, field in layout}
    if isinstance(shape, type) and issubclass(shape, enum.Enum):
        return list(shape)[rng.integers(0, len(shape))]
    low = -(1 << (shape.width - 1)) if shape.signed else 0
    high = (1 << (shape.width - shape.signed)) - 1
    pick = rng.integers(0, 4)
    if pick == 0:
        return low
    if pick == 1:
        return high
    return low + int.from_bytes(rng.bytes(shape.width // 8 + 1), "little") % (high - low + 1)


def columns_of(shape, values):
    """The batch columns of a list of Python values (arrays at the leaves, array axes after the batch axis)."""
    layout = shape if isinstance(shape, data.Layout) else None
    if isinstance(shape, type) and issubclass(shape, data.View):
        layout = data.Layout.cast(shape)
    if isinstance(layout, data.ArrayLayout):
        elements = [columns_of(layout.elem_shape, [value[i] for value in values]) for i in range(layout.length)]
        return _stack(elements)
    if layout is not None:
        names = [name for name, _ in layout] if not isinstance(layout, data.UnionLayout) else list(values[0])
        return {name: columns_of(layout[name].shape, [value[name] for value in values]) for name in names}
    if isinstance(shape, type) and issubclass(shape, enum.Enum):
        return np.array([value.value for value in values])
    if shape.width > 64:
        return np.array(values, dtype=object)
    return np.array(values, dtype=np.uint64 if not shape.signed and shape.width == 64 else np.int64)


def _stack(elements):
    if isinstance(elements[0], dict):
        return {name: _stack([element[name] for element in elements]) for name in elements[0]}
    return np.stack(elements, axis=1)


@pytest.mark.parametrize("seed", range(40))
def test_single_values_match_amaranth_constants(seed):
    rng = np.random.default_rng(seed)
    shape = random_shape(rng)
    codec_ = Codec(shape)
    for _ in range(10):
        value = random_value(rng, shape)
        bits = const_bits(shape, value)
        assert codec_.pack_value(value) == bits
        assert codec_.unpack_value(bits) == const_value(shape, bits)


@pytest.mark.parametrize("seed", range(40))
def test_batches_match_amaranth_constants(seed):
    rng = np.random.default_rng(1000 + seed)
    shape = random_shape(rng)
    codec_ = Codec(shape)
    count = int(rng.integers(1, 40))
    # A batch gives one member of each union (for every row and array element).
    arm = int(rng.integers(0, 12))
    values = [random_value(rng, shape, arm) for _ in range(count)]
    words = codec_.pack(columns_of(shape, values))
    assert words.shape == (count, codec_.limbs) and words.dtype == np.uint64
    expected = [const_bits(shape, value) for value in values]
    assert to_ints(words) == expected
    # Unpacking the batch gives the columns of the values unpacked one at a time (every union member included).
    _assert_columns_equal(codec_.unpack(words), [const_value(shape, bits) for bits in expected], shape)


def _assert_columns_equal(columns, values, shape):
    layout = shape if isinstance(shape, data.Layout) else None
    if isinstance(shape, type) and issubclass(shape, data.View):
        layout = data.Layout.cast(shape)
    if isinstance(layout, data.ArrayLayout):
        for i in range(layout.length):
            _assert_columns_equal(_index(columns, i), [value[i] for value in values], layout.elem_shape)
        return
    if layout is not None:
        assert set(columns) == {name for name, _ in layout}
        for name, field in layout:
            _assert_columns_equal(columns[name], [value[name] for value in values], field.shape)
        return
    ints = [getattr(value, "value", value) for value in values]
    width = Shape.cast(shape).width
    if width > 64:
        assert columns.shape == (len(values), limbs(width))
        assert to_ints(columns) == [v & ((1 << width) - 1) for v in ints]
    else:
        assert columns.tolist() == ints


def _index(columns, i):
    if isinstance(columns, dict):
        return {name: _index(child, i) for name, child in columns.items()}
    return columns[:, i]


# Edge cases -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 8, 63, 64, 65, 128, 257])
@pytest.mark.parametrize("sign", [False, True])
def test_extremes_of_every_width(width, sign):
    shape = signed(width) if sign else unsigned(width)
    low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if sign else (0, (1 << width) - 1)
    values = [low, high, 0 if not sign else -1, low + 1 if width > 1 else low]
    column = np.array(values, dtype=object) if width > 64 else \
        np.array(values, dtype=np.uint64 if width == 64 and not sign else np.int64)
    words = Codec(shape).pack(column)
    assert to_ints(words) == [const_bits(shape, v) for v in values]
    back = Codec(shape).unpack(words)
    if width > 64:
        assert to_ints(back) == [v & ((1 << width) - 1) for v in values]
    else:
        assert back.tolist() == values
    for bad in (low - 1, high + 1):
        with pytest.raises(CodecError, match=f"payload = {bad} does not fit"):
            Codec(shape).pack(np.array([0, bad], dtype=object))
        with pytest.raises(CodecError, match=f"payload = {bad} does not fit"):
            Codec(shape).pack_value(bad)


def test_one_bit_fields_and_bool_columns():
    layout = data.StructLayout({"a": 1, "b": 1, "c": data.ArrayLayout(1, 70)})
    flags = np.arange(3 * 70).reshape(3, 70) % 3 == 0
    words = Codec(layout).pack({"a": [True, False, True], "b": 1, "c": flags})
    columns = Codec(layout).unpack(words)
    assert columns["a"].tolist() == [1, 0, 1] and columns["b"].tolist() == [1, 1, 1]
    assert np.array_equal(columns["c"], flags.astype(np.int64))
    assert to_ints(words)[1] == const_bits(layout, {"a": 0, "b": 1, "c": flags[1].astype(int).tolist()})


def test_arrays_of_structs_take_an_axis_per_array():
    layout = data.ArrayLayout(data.StructLayout({"x": Inner, "y": data.ArrayLayout(signed(5), 3), "op": Op}), 2)
    rng = np.random.default_rng(5)
    columns = {"x": {"a": rng.integers(-8, 8, (4, 2)), "b": rng.integers(0, 8, (4, 2))},
               "y": rng.integers(-16, 16, (4, 2, 3)), "op": np.array([[Op.ADD, Op.MUL]] * 4, dtype=object)}
    words = Codec(layout).pack(columns)
    for row in range(4):
        value = [{"x": {"a": int(columns["x"]["a"][row, i]), "b": int(columns["x"]["b"][row, i])},
                  "y": columns["y"][row, i].tolist(), "op": [Op.ADD, Op.MUL][i]} for i in range(2)]
        assert to_ints(words)[row] == const_bits(layout, value)
    back = Codec(layout).unpack(words)
    assert np.array_equal(back["y"], columns["y"]) and back["op"].tolist() == [[0, 3]] * 4


def test_unions_pack_one_member_and_unpack_all():
    layout = data.StructLayout({"tag": 2, "body": Either})
    words = Codec(layout).pack({"tag": [1, 2], "body": {"big": [-1, -2048]}})
    assert to_ints(words) == [const_bits(layout, {"tag": t, "body": {"big": b}}) for t, b in ((1, -1), (2, -2048))]
    back = Codec(layout).unpack(words)
    assert back["body"]["big"].tolist() == [-1, -2048] and back["body"]["small"].tolist() == [31, 0]
    with pytest.raises(CodecError, match=r"payload.body is a union: give exactly one of small, big"):
        Codec(layout).pack({"tag": 0, "body": {"big": 0, "small": 0}}, count=1)
    # One field alone: the same columns as in the whole unpacking.
    assert Codec(layout).unpack(words, ("body", "small")).tolist() == [31, 0]
    assert Codec(layout).unpack(words, ("tag",)).tolist() == [1, 2]
    with pytest.raises(CodecError, match=r"^The shape has no field body.huge$"):
        Codec(layout).unpack(words, ("body", "huge"))
    assert Codec(layout).unpack(words, "tag").tolist() == [1, 2]
    # No words: empty columns, byte-aligned leaves too.
    aligned = data.StructLayout({"a": 8, "b": 16})
    assert Codec(aligned).unpack(np.zeros((0, 1), dtype=np.uint64), ("b",)).shape == (0,)
    with pytest.raises(CodecError, match=r"not an array of shape \(\)"):
        from_ints(np.array(5, dtype=object), 8)


def test_structured_arrays_are_columns():
    layout = data.StructLayout({"score": signed(32), "index": unsigned(16), "keep": 1})
    records = np.zeros(3, dtype=[("score", "<i4"), ("index", "<u2"), ("keep", "?")])
    records["score"], records["index"], records["keep"] = [-5, 7, 2**31 - 1], [1, 2, 65535], [True, False, True]
    words = Codec(layout).pack(records)
    assert to_ints(words) == [const_bits(layout, {"score": int(s), "index": int(i), "keep": int(k)})
                              for s, i, k in records.tolist()]


def test_errors_name_the_field_the_row_and_the_value():
    layout = data.StructLayout({"x": Inner, "y": data.ArrayLayout(data.StructLayout({"v": unsigned(4)}), 3)})
    good = {"x": {"a": np.zeros(5, dtype=int), "b": 0}, "y": {"v": np.zeros((5, 3), dtype=int)}}
    bad = {**good, "y": {"v": np.zeros((5, 3), dtype=int)}}
    bad["y"]["v"][3, 2] = 16
    message = r"^row 3: payload.y\[2\].v = 16 does not fit unsigned\(4\) \(range \[0, 15\]\)$"
    with pytest.raises(CodecError, match=message):
        Codec(layout).pack(bad)
    with pytest.raises(CodecError, match=r"^row 1: payload.x.a = -9 does not fit signed\(4\)"):
        Codec(layout).pack({**good, "x": {"a": [0, -9, 0, 0, 0], "b": 0}})
    with pytest.raises(CodecError, match="payload.x is missing field 'b'"):
        Codec(layout).pack({**good, "x": {"a": 0}})
    with pytest.raises(CodecError, match="payload has no field 'z'"):
        Codec(layout).pack({**good, "z": 1})
    with pytest.raises(CodecError, match=r"payload.x.a has 4 rows but payload.y\[\*\].v has 5"):
        Codec(layout).pack({**good, "x": {"a": np.zeros(4, dtype=int), "b": 0}})
    with pytest.raises(CodecError, match="payload.x.b must hold integers, not float64"):
        Codec(layout).pack({**good, "x": {"a": 0, "b": np.zeros(5)}})
    with pytest.raises(CodecError, match=r"row 2: payload.op = 2 is not a member of Op"):
        Codec(data.StructLayout({"op": Op})).pack({"op": [0, 3, 2]})
    with pytest.raises(CodecError, match="give the batch size as count="):
        Codec(Inner).pack({"a": 1, "b": 2})
    assert to_ints(Codec(Inner).pack({"a": 1, "b": 2}, count=2)) == [const_bits(Inner, {"a": 1, "b": 2})] * 2


@pytest.mark.parametrize(("value", "message"), [
    ({"a": 8, "b": 0}, r"payload.a = 8 does not fit signed\(4\)"),
    ({"a": 0}, "payload is missing field 'b'"),
    ({"a": 0, "b": 0, "c": 1}, "payload has no field 'c'"),
    ([0, 0], "payload must be a dict with fields a, b"),
    ({"a": 0, "b": 1.5}, "payload.b must be an integer, not 1.5"),
])
def test_single_value_errors_name_the_field(value, message):
    with pytest.raises(CodecError, match=message):
        pack(Inner, value)


def test_single_values_of_enums_and_arrays():
    layout = data.StructLayout({"op": Op, "mode": Mode, "y": data.ArrayLayout(signed(5), 3)})
    value = {"op": Op.MUL, "mode": Mode.LOW, "y": [-16, 0, 15]}
    assert unpack(layout, pack(layout, value)) == value
    with pytest.raises(CodecError, match="payload.y must be a sequence of 3 elements"):
        pack(layout, {**value, "y": [0]})
    with pytest.raises(CodecError, match="payload.op = 1 is not a member of Op"):
        pack(layout, {**value, "op": 1})
    # A value that is no member unpacks to its plain int (an unused union member may hold anything).
    assert unpack(Op, 1) == 1
    assert codec(Op) is codec(Op)
    # Lists of single values: packed words, and the row of a bad one.
    words = codec(layout).pack_values([value, {**value, "op": Op.ADD}])
    assert codec(layout).unpack_values(words) == [value, {**value, "op": Op.ADD}]
    with pytest.raises(CodecError, match=r"^row 1: payload.y\[2\] = 16 does not fit signed\(5\)"):
        codec(layout).pack_values([value, {**value, "y": [0, 0, 16]}])


# Words ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 4, 5, 63, 64, 65, 128, 257])
def test_ints_and_hex_lines_round_trip(width):
    rng = np.random.default_rng(width)
    ints = [0, (1 << width) - 1] + [int.from_bytes(rng.bytes(40), "little") % (1 << width) for _ in range(50)]
    words = from_ints(ints, width)
    assert words.shape == (len(ints), limbs(width)) and to_ints(words) == ints
    text = format_hex(words, width)
    digits = max(1, -(-width // 4))
    assert text == "".join(f"{v:0{digits}x}\n" for v in ints)
    assert np.array_equal(parse_hex(text, width), words)
    # Short words and upper-case digits parse too (leading zeros are optional).
    assert to_ints(parse_hex(" ".join(f"{v:X}" for v in ints), width)) == ints
    assert parse_hex("", width).shape == (0, limbs(width)) and format_hex(parse_hex("", width), width) == ""


def test_word_errors():
    with pytest.raises(CodecError, match="Value #1 = 16 is not 4 packed bits"):
        from_ints([3, 16], 4)
    with pytest.raises(CodecError, match="Value #0 = -1 is not 4 packed bits"):
        from_ints(np.array([-1]), 4)
    # Python ints, wide and narrow: a negative one, one too wide for the limbs or for the top limb, no integer.
    with pytest.raises(CodecError, match="Value #2 = -5 is not 65 packed bits"):
        from_ints([1, 2, -5], 65)
    with pytest.raises(CodecError, match=f"Value #1 = {1 << 128} is not 65 packed bits"):
        from_ints([1, 1 << 128], 65)
    with pytest.raises(CodecError, match=f"Value #0 = {1 << 65} is not 65 packed bits"):
        from_ints([1 << 65], 65)
    with pytest.raises(CodecError, match="Value #1 = 2.0 is not an integer"):
        from_ints([1, 2.0], 65)
    assert to_ints(from_ints([np.int64(3), 1 << 64], 65)) == [3, 1 << 64]
    with pytest.raises(CodecError, match="Packed word #1 has bits set beyond its 4 bits"):
        format_hex(np.array([[1], [17]], dtype=np.uint64), 4)
    with pytest.raises(CodecError, match=r"Hex word #1 'g1' has a character that is no hex digit \('g'\)"):
        parse_hex("01\ng1\n", 8)
    with pytest.raises(CodecError, match="Hex word #0 '1ff' has more than 2 digits"):
        parse_hex("1ff\n", 8)
    with pytest.raises(CodecError, match=r"need shape \(n, 2\)"):
        Codec(unsigned(65)).unpack(np.zeros((3, 1), dtype=np.uint64))


def test_wide_leaves_take_limbs():
    layout = data.StructLayout({"flag": 1, "line": unsigned(130)})
    line = np.array([[1, 2, 3], [0xFFFF_FFFF_FFFF_FFFF, 0, 1]], dtype=np.uint64)
    words = Codec(layout).pack({"flag": 1, "line": line})
    assert to_ints(words) == [1 | ((1 | 2 << 64 | 3 << 128) << 1), 1 | ((2**64 - 1 | 1 << 128) << 1)]
    assert np.array_equal(Codec(layout).unpack(words)["line"], line)
    with pytest.raises(CodecError, match=r"row 0: payload.line: limbs \[1, 2, 4\] do not fit unsigned\(130\)"):
        Codec(layout).pack({"flag": 1, "line": line + np.array([0, 0, 1], dtype=np.uint64)})


def test_large_batches_go_in_chunks():
    # 40,000 rows of 64 seven-bit elements: more elements than one chunk of the packer holds.
    layout = data.StructLayout({"head": signed(3), "x": data.ArrayLayout(signed(7), 64)})
    rng = np.random.default_rng(7)
    columns = {"head": rng.integers(-4, 4, 40_000), "x": rng.integers(-64, 64, (40_000, 64))}
    words = Codec(layout).pack(columns)
    back = Codec(layout).unpack(words)
    assert np.array_equal(back["head"], columns["head"]) and np.array_equal(back["x"], columns["x"])
    ints = to_ints(words)
    for row in (0, 19_999, 39_999):
        assert ints[row] == const_bits(layout, {"head": int(columns["head"][row]), "x": columns["x"][row].tolist()})


@pytest.mark.parametrize("width", [65, 128, 256, 257])
def test_a_wide_leaf_unpacks_at_every_bit_offset(width):
    # A wide leaf goes down as whole limbs shifted together: every shift within a limb, and a leaf that ends in
    # the word's top limb (nothing above it) or below it (a field after it).
    rng = np.random.default_rng(width)
    for offset in [*range(1, 65), 127, 128, 130]:
        for tail in (0, 5):
            fields = {"head": unsigned(offset), "line": unsigned(width)} | ({"tail": unsigned(tail)} if tail else {})
            layout = data.StructLayout(fields)
            values = [int(v) for v in rng.integers(0, 1 << 62, 3)]
            lines = [(a << (width - 62)) | b for a, b in zip(values, rng.integers(0, 1 << 62, 3).tolist())]
            ints = [line << offset | (1 << offset) - 1 | ((1 << tail) - 1) << (offset + width) for line in lines]
            words = from_ints(ints, layout.size)
            assert to_ints(Codec(layout).unpack(words, "line")) == lines
