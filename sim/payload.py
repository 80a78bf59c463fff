"""Packing and unpacking of stream payloads through their shapes.

Test benches never slice payload bits by hand: a value is a Python ``int`` for a plain shape, a ``dict`` for a
:class:`amaranth.lib.data.StructLayout` (or union), and a ``list`` for an
:class:`amaranth.lib.data.ArrayLayout`, nested as deep as the layout is. :func:`pack` turns such a value into the
payload's bits and :func:`unpack` turns bits back into it. Both work the same for the Amaranth simulator and for
cocotb (where a port is a flat bit vector).
"""

from amaranth.hdl import Const, Shape, ShapeCastable
from amaranth.lib import data

__all__ = ["PayloadError", "pack", "payload_shape", "unpack", "width"]


class PayloadError(ValueError):
    """A payload value does not fit its shape (the message names the field and value)."""


def payload_shape(stream_signature):
    """The payload shape of a :class:`amaranth.lib.stream.Signature` (or of an interface with one)."""
    signature = getattr(stream_signature, "signature", stream_signature)
    return signature.members["payload"].shape


def width(shape):
    """Width in bits of ``shape``."""
    return Shape.cast(shape).width


def _int_range(shape):
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def _layout(shape):
    # A Struct/Union class is a shape-castable whose layout is what matters here.
    if isinstance(shape, data.Layout):
        return shape
    if isinstance(shape, type) and issubclass(shape, data.View):
        return data.Layout.cast(shape)
    return None


def pack(shape, value, *, _path="payload"):
    """Pack ``value`` into the unsigned integer holding the bits of ``shape``.

    Raises
    ------
    PayloadError
        If ``value`` has the wrong structure, misses a field, or holds a number its field cannot represent.
    """
    if (layout := _layout(shape)) is not None:
        return _pack_layout(layout, value, _path)
    if isinstance(shape, ShapeCastable):
        # Enums and other shape-castables: go through their own constant conversion.
        return Const.cast(shape.const(value)).value & ((1 << width(shape)) - 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{_path} must be an integer, not {value!r}")
    low, high = _int_range(shape)
    if not low <= value <= high:
        raise PayloadError(f"{_path} = {value} does not fit {Shape.cast(shape)} (range [{low}, {high}])")
    return value & ((1 << width(shape)) - 1)


def _pack_layout(layout, value, path):
    bits = 0
    if isinstance(layout, data.ArrayLayout):
        if not isinstance(value, (list, tuple)) or len(value) != layout.length:
            raise PayloadError(f"{path} must be a sequence of {layout.length} elements, not {value!r}")
        elem_width = width(layout.elem_shape)
        for index, elem in enumerate(value):
            bits |= pack(layout.elem_shape, elem, _path=f"{path}[{index}]") << (index * elem_width)
        return bits
    if not isinstance(value, dict):
        raise PayloadError(f"{path} must be a dict with fields {', '.join(name for name, _ in layout)}, "
                           f"not {value!r}")
    names = {name for name, _ in layout}
    unknown = sorted(set(value) - names)
    if unknown:
        raise PayloadError(f"{path} has no field {unknown[0]!r} (fields: {', '.join(sorted(names))})")
    if isinstance(layout, data.UnionLayout):
        if len(value) != 1:
            raise PayloadError(f"{path} is a union: give exactly one field, not {sorted(value)}")
    else:
        missing = [name for name, _ in layout if name not in value]
        if missing:
            raise PayloadError(f"{path} is missing field {missing[0]!r}")
    for name, field in layout:
        if name in value:
            bits |= pack(field.shape, value[name], _path=f"{path}.{name}") << field.offset
    return bits


def unpack(shape, bits):
    """Turn the bits of ``shape`` (an int, taken modulo ``2**width``) into a Python value."""
    bits &= (1 << width(shape)) - 1
    shape = _layout(shape) or shape
    if isinstance(shape, data.ArrayLayout):
        elem_width = width(shape.elem_shape)
        mask = (1 << elem_width) - 1
        return [unpack(shape.elem_shape, (bits >> (i * elem_width)) & mask) for i in range(shape.length)]
    if isinstance(shape, data.Layout):
        out = {}
        for name, field in shape:
            out[name] = unpack(field.shape, (bits >> field.offset) & ((1 << field.width) - 1))
        return out
    if isinstance(shape, ShapeCastable):
        return shape.from_bits(bits)
    shape = Shape.cast(shape)
    if shape.signed and bits >> (shape.width - 1):
        return bits - (1 << shape.width)
    return bits
