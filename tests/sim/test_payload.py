import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from rpaccel.rtl.postproc import PostProcessIn
from rpaccel.sim.payload import PayloadError, pack, unpack


class Op(enum.Enum, shape=2):
    ADD = 0
    MUL = 3


class Inner(data.Struct):
    a: signed(4)
    b: unsigned(3)


class Outer(data.Struct):
    x: Inner
    y: data.ArrayLayout(signed(5), 3)
    op: Op


def test_roundtrip_nested_layouts():
    value = {"x": {"a": -8, "b": 7}, "y": [-16, 0, 15], "op": Op.MUL}
    assert unpack(Outer, pack(Outer, value)) == value


def test_bits_follow_the_layout():
    bits = pack(Inner, {"a": -1, "b": 5})
    assert bits == 0b101_1111
    assert pack(signed(8), -1) == 0xFF
    assert unpack(signed(8), 0xFF) == -1
    assert unpack(unsigned(8), 0xFF) == 255


def test_postprocess_payload_roundtrip():
    value = {"acc": -(1 << 31), "bias": (1 << 31) - 1, "params": {"m": 65535, "s": 63, "relu": 1, "raw": 0}}
    assert unpack(PostProcessIn, pack(PostProcessIn, value)) == value


@pytest.mark.parametrize(("value", "message"), [
    ({"a": 8, "b": 0}, r"payload.a = 8 does not fit signed\(4\)"),
    ({"a": 0}, "payload is missing field 'b'"),
    ({"a": 0, "b": 0, "c": 1}, "payload has no field 'c'"),
    ([0, 0], "payload must be a dict with fields a, b"),
    ({"a": 0, "b": 1.5}, "payload.b must be an integer, not 1.5"),
])
def test_bad_values_name_the_field(value, message):
    with pytest.raises(PayloadError, match=message):
        pack(Inner, value)


def test_bad_array_length():
    with pytest.raises(PayloadError, match="payload.y must be a sequence of 3 elements"):
        pack(Outer, {"x": {"a": 0, "b": 0}, "y": [0], "op": Op.ADD})
