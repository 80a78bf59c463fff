"""One codec for stream payloads: any :mod:`amaranth.lib.data` shape to and from numpy arrays, vectorised.

A :class:`Codec` is made once per shape (a plain :class:`~amaranth.hdl.Shape` or ``range``, an enum, a
:class:`~amaranth.lib.data.StructLayout`, :class:`~amaranth.lib.data.UnionLayout` or
:class:`~amaranth.lib.data.ArrayLayout`, nested as deep as wanted, or a :class:`~amaranth.lib.data.Struct` or
:class:`~amaranth.lib.data.Union` class) and moves values two ways:

* **Batches**, for runs of many transfers: :meth:`Codec.pack` takes *columns*, values laid out like the shape
  with numpy arrays at the leaves, and returns the packed *words*; :meth:`Codec.unpack` turns words back into
  columns. The work is a loop over the leaf fields, each a few numpy operations over the whole batch.
* **Single values**, for stream drivers that move one transfer at a time: :meth:`Codec.pack_value` and
  :meth:`Codec.unpack_value` turn a Python value (an ``int`` or enum member at a leaf, a ``dict`` for a struct or
  union, a ``list`` for an array) into the payload's bits as an ``int`` and back.

Columns mirror the shape: a struct is a mapping with every field (a numpy structured array works too), a union a
mapping with exactly one member when packing (the same one for every row: pack batches of different members
apart and concatenate the words) and with every member when unpacking, and an array of ``length`` elements is the
element's columns with one more axis of that length after the batch axis (outer arrays first). A leaf is
an integer array of shape ``(n, *array_axes)``, or anything that broadcasts to it (a scalar gives every row the
same value). Enum leaves take members or their values and unpack to their values. Leaves of up to 64 bits unpack
to ``int64`` (``uint64`` for ``unsigned(64)``); a leaf wider than 64 bits travels as raw little-endian 64-bit
*limbs*, one more axis of ``ceil(width / 64)`` ``uint64`` (or give it an object array of Python ints).

Packed words are an ``(n, limbs)`` ``uint64`` array, ``limbs = ceil(width / 64)`` (at least 1), limb 0 holding
bits 0 to 63. :func:`to_ints` and :func:`from_ints` convert them to and from Python ints; :func:`format_hex` and
:func:`parse_hex` write and read them as one zero-padded hex word per line, as the file-driven
:class:`~rpaccel.sim.player.Player` does.

Example::

    codec = Codec(data.StructLayout({"score": signed(32), "flags": data.ArrayLayout(1, 4)}))
    words = codec.pack({"score": scores, "flags": flags})        # scores (n,), flags (n, 4)
    columns = codec.unpack(words)                                # {"score": (n,) int64, "flags": (n, 4) int64}
    codec.pack_value({"score": -1, "flags": [1, 0, 0, 1]})      # one value, an int
"""

import enum
import functools
from collections.abc import Mapping, Sequence

import numpy as np
from amaranth.hdl import Const, Shape, ShapeCastable
from amaranth.lib import data

__all__ = ["LIMB_BITS", "Codec", "CodecError", "codec", "format_hex", "from_ints", "limbs", "pack", "parse_hex",
           "to_ints", "unpack"]

#: Bits per limb of a packed word.
LIMB_BITS = 64

_WORD = np.dtype("<u8")
_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# Rows packed or unpacked at once, times the leaf's elements: bounds the temporaries of a wide leaf.
_CHUNK_ELEMENTS = 1 << 21


class CodecError(ValueError):
    """A value does not fit its shape, or has the wrong structure (the message names the field and value)."""


def limbs(width):
    """64-bit limbs of a packed word of ``width`` bits (at least 1)."""
    return max(1, -(-width // LIMB_BITS))


def _layout(shape):
    if isinstance(shape, data.Layout):
        return shape
    if isinstance(shape, type) and issubclass(shape, data.View):
        return data.Layout.cast(shape)
    return None


def _node(shape):
    if (layout := _layout(shape)) is not None:
        if isinstance(layout, data.ArrayLayout):
            return _Array(layout)
        return _Struct(layout)
    return _Leaf(shape)


class _Leaf:
    """An integer field: a plain shape, a ``range``, an enum, or another shape-castable carried as its bits."""

    def __init__(self, shape):
        self.shape = shape
        cast = Shape.cast(shape)
        self.width, self.signed = cast.width, cast.signed
        self.low = -(1 << (self.width - 1)) if self.signed and self.width else 0
        self.high = (1 << (self.width - self.signed)) - 1 if self.width else 0
        self.enum = shape if isinstance(shape, type) and issubclass(shape, enum.Enum) else None
        self.members = None if self.enum is None else {member.value for member in self.enum}
        self.wide = self.width > LIMB_BITS

    def describe(self):
        if self.enum is not None:
            return self.enum.__name__
        return repr(Shape.cast(self.shape))

    # Single values -----------------------------------------------------------------------------------------

    def pack_value(self, value, path):
        if self.enum is not None:
            if isinstance(value, self.enum):
                value = value.value
            elif isinstance(value, enum.Enum) or not isinstance(value, (int, np.integer)) \
                    or int(value) not in self.members:
                raise CodecError(f"{path} = {value!r} is not a member of {self.enum.__name__}")
            return int(value) & ((1 << self.width) - 1)
        if isinstance(self.shape, ShapeCastable) and not isinstance(value, (int, np.integer)):
            # Another shape-castable: its own constant conversion.
            return Const.cast(self.shape.const(value)).value & ((1 << self.width) - 1)
        if not isinstance(value, (int, np.integer)):
            raise CodecError(f"{path} must be an integer, not {value!r}")
        value = int(value)
        if not self.low <= value <= self.high:
            raise CodecError(f"{path} = {value} does not fit {self.describe()} (range [{self.low}, {self.high}])")
        return value & ((1 << self.width) - 1)

    def unpack_value(self, bits):
        if self.signed and self.width and bits >> (self.width - 1):
            bits -= 1 << self.width
        if self.enum is not None and bits in self.members:
            return self.enum(bits)
        return bits

    # Batches -----------------------------------------------------------------------------------------------

    def collect(self, value, path, offsets, out):
        out.append(_Column(self, path, offsets, value))

    def columns(self, offsets):
        return _Column(self, None, offsets, None)


class _Struct:
    """A struct or union layout."""

    def __init__(self, layout):
        self.union = isinstance(layout, data.UnionLayout)
        self.width = layout.size
        self.fields = [(name, field.offset, _node(field.shape)) for name, field in layout]
        self.names = [name for name, _, _ in self.fields]

    def _check_keys(self, keys, path):
        unknown = sorted(set(keys) - set(self.names), key=str)
        if unknown:
            raise CodecError(f"{path} has no field {unknown[0]!r} (fields: {', '.join(self.names)})")
        if self.union:
            if len(keys) != 1:
                raise CodecError(f"{path} is a union: give exactly one of {', '.join(self.names)}, "
                                 f"not {sorted(keys, key=str)}")
        else:
            missing = [name for name in self.names if name not in keys]
            if missing:
                raise CodecError(f"{path} is missing field {missing[0]!r}")

    def pack_value(self, value, path):
        if not isinstance(value, Mapping):
            raise CodecError(f"{path} must be a dict with fields {', '.join(self.names)}, not {value!r}")
        self._check_keys(value.keys(), path)
        bits = 0
        for name, offset, node in self.fields:
            if name in value:
                bits |= node.pack_value(value[name], f"{path}.{name}") << offset
        return bits

    def unpack_value(self, bits):
        return {name: node.unpack_value((bits >> offset) & ((1 << node.width) - 1))
                for name, offset, node in self.fields}

    def collect(self, value, path, offsets, out):
        if isinstance(value, (np.ndarray, np.void)) and value.dtype.names is not None:
            keys = value.dtype.names
        elif isinstance(value, Mapping):
            keys = value.keys()
        else:
            raise CodecError(f"{_path_text(path)} must be a mapping (or structured array) with fields "
                             f"{', '.join(self.names)}, not {type(value).__name__}")
        self._check_keys(keys, _path_text(path))
        for name, offset, node in self.fields:
            if name in keys:
                node.collect(value[name], (*path, name), offsets + offset, out)

    def columns(self, offsets):
        return {name: node.columns(offsets + offset) for name, offset, node in self.fields}


class _Array:
    """An array layout: its elements' columns gain an axis."""

    def __init__(self, layout):
        self.length = layout.length
        self.elem = _node(layout.elem_shape)
        self.stride = Shape.cast(layout.elem_shape).width
        self.width = layout.size

    def pack_value(self, value, path):
        if not isinstance(value, (Sequence, np.ndarray)) or isinstance(value, (str, bytes)) \
                or len(value) != self.length:
            raise CodecError(f"{path} must be a sequence of {self.length} elements, not {value!r}")
        bits = 0
        for index, elem in enumerate(value):
            bits |= self.elem.pack_value(elem, f"{path}[{index}]") << (index * self.stride)
        return bits

    def unpack_value(self, bits):
        mask = (1 << self.stride) - 1
        return [self.elem.unpack_value((bits >> (index * self.stride)) & mask) for index in range(self.length)]

    def collect(self, value, path, offsets, out):
        self.elem.collect(value, (*path, None), self._grow(offsets), out)

    def columns(self, offsets):
        return self.elem.columns(self._grow(offsets))

    def _grow(self, offsets):
        return offsets[..., None] + np.arange(self.length, dtype=np.int64) * self.stride


def _path_text(parts, index=()):
    """``payload.x[3].y`` from the parts of a field path (``None`` for an array axis) and the indices of its
    array axes (``*`` where none is given)."""
    index = ("*",) * (sum(part is None for part in parts) - len(index)) + tuple(index)
    text, axes = "", iter(index)
    for part in parts:
        text += f"[{next(axes)}]" if part is None else f".{part}" if text else str(part)
    return text


class _Column:
    """One leaf of a batch: its node, path, bit offsets (one per element, shaped by the array axes) and the value
    given for it (when packing)."""

    def __init__(self, leaf, path, offsets, value):
        self.leaf, self.path, self.offsets, self.value = leaf, path, offsets, value


class Codec:
    """Packs and unpacks values of one payload shape.

    Parameters
    ----------
    shape : shape-castable
        A plain shape, ``range``, enum, data layout (nested as wanted) or ``Struct``/``Union`` class.

    Attributes
    ----------
    shape
        The shape given.
    width : int
        Bits of a packed value.
    limbs : int
        64-bit limbs of a packed word (``ceil(width / 64)``, at least 1).
    """

    def __init__(self, shape):
        try:
            self.width = Shape.cast(shape).width
        except TypeError as error:
            raise TypeError(f"Codec needs a shape-castable object, not {shape!r} ({error})") from None
        self.shape = shape
        self.limbs = limbs(self.width)
        self._root = _node(shape)
        self._plans = {}        # field path -> its leaves' unpackers

    def __repr__(self):
        return f"Codec({self.shape!r})"

    # Single values ---------------------------------------------------------------------------------------------

    def pack_value(self, value):
        """The payload bits of one ``value`` (an ``int``, enum member, ``dict`` or ``list`` as the shape asks), as an
        unsigned ``int``.

        Raises
        ------
        CodecError
            If ``value`` has the wrong structure, misses a field, or holds a number its field cannot represent.
        """
        return self._root.pack_value(value, "payload")

    def unpack_value(self, bits):
        """The Python value of the payload bits ``bits`` (an ``int``, taken modulo ``2**width``); enum fields give
        members (or the plain ``int`` of a value that is none)."""
        return self._root.unpack_value(int(bits) & ((1 << self.width) - 1))

    # Batches ---------------------------------------------------------------------------------------------------

    def pack(self, columns, *, count=None):
        """Pack a batch given as ``columns`` (see the module documentation) into ``(n, limbs)`` uint64 words.

        Parameters
        ----------
        columns
            Values laid out like the shape with arrays at the leaves; for a plain shape, an array of ``n`` values.
        count : int, optional
            Rows of the batch; by default the length of the leaf arrays (which must agree). Needed only when every
            leaf is a scalar.

        Raises
        ------
        CodecError
            On a value out of its field's range (naming the field path, the row and the value), a missing or
            unknown field, or leaves of different lengths.
        """
        leaves = []
        self._root.collect(columns, ("payload",), np.zeros((), dtype=np.int64), leaves)
        arrays = [_leaf_array(column) for column in leaves]
        rows = {}
        for column, array in zip(leaves, arrays):
            axes = column.offsets.ndim + column.leaf.wide
            if array.ndim > axes:
                rows.setdefault(array.shape[0], column)
        if count is None:
            if len(rows) > 1:
                (a, first), (b, second) = list(rows.items())[:2]
                raise CodecError(f"{_path_text(first.path)} has {a} rows but {_path_text(second.path)} has {b}")
            if not rows:
                raise CodecError("Every field is a scalar: give the batch size as count=")
            count = next(iter(rows))
        words = np.zeros((count, self.limbs), dtype=_WORD)
        for column, array in zip(leaves, arrays):
            _pack_leaf(words, column, array, count)
        return words

    def unpack(self, words, path=()):
        """Unpack ``(n, limbs)`` words (or ``n`` words of a one-limb shape) into columns (see the module
        documentation): ``int64`` arrays at the leaves (``uint64`` for ``unsigned(64)``, limbs for wider leaves).

        Parameters
        ----------
        words : numpy.ndarray
        path : str or sequence of str
            Names of nested fields: unpack only that field of each word (e.g. ``("arg", "fetch")``: the columns
            of ``columns["arg"]["fetch"]``, and nothing else is unpacked; a string names a top-level field).

        Raises
        ------
        CodecError
            If ``words`` does not have ``limbs`` columns of unsigned integers or sets bits beyond ``width``, or
            ``path`` names a field the shape does not have.
        """
        words = _check_words(words, self.width)
        path = (path,) if isinstance(path, str) else tuple(path)
        plan = self._plans.get(path)
        if plan is None:
            tree = self._root.columns(np.zeros((), dtype=np.int64))
            for depth, name in enumerate(path):
                if not isinstance(tree, dict) or name not in tree:
                    raise CodecError(f"The shape has no field {'.'.join(map(str, path[:depth + 1]))}")
                tree = tree[name]
            plan = self._plans[path] = _plan(tree)
        return _fill(plan, words)

    # Lists of single values ---------------------------------------------------------------------------------------

    def pack_values(self, values):
        """:meth:`pack_value` of each of ``values``, as ``(n, limbs)`` words.

        Raises
        ------
        CodecError
            As :meth:`pack_value`, the message starting with the row (``row 3: payload.x = ...``).
        """
        bits = []
        for row, value in enumerate(values):
            try:
                bits.append(self._root.pack_value(value, "payload"))
            except CodecError as error:
                raise CodecError(f"row {row}: {error}") from None
        return from_ints(bits, self.width)

    def unpack_values(self, words):
        """:meth:`unpack_value` of each packed word of ``words``, as a list."""
        return [self.unpack_value(bits) for bits in to_ints(_check_words(words, self.width))]


@functools.cache
def codec(shape):
    """The :class:`Codec` of ``shape``, made once per (equal) shape."""
    return Codec(shape)


def pack(shape, value):
    """:meth:`Codec.pack_value` of ``value`` with the codec of ``shape``."""
    return codec(shape).pack_value(value)


def unpack(shape, bits):
    """:meth:`Codec.unpack_value` of ``bits`` with the codec of ``shape``."""
    return codec(shape).unpack_value(bits)


# Leaves of a batch ------------------------------------------------------------------------------------------------

def _leaf_array(column):
    """The value of a leaf as an integer numpy array (``uint64`` limbs for a wide leaf), checked against the
    field's range."""
    leaf, value = column.leaf, column.value
    array = np.asarray(value)
    if leaf.wide and array.ndim == 0 and array.dtype.kind in "iu":
        array = array.astype(object)  # one int for every row
    if array.dtype.kind == "O":
        array = _from_objects(column, array)
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise CodecError(f"{_path_text(column.path)} must hold integers, not {array.dtype} values")
    if leaf.wide:
        return _check_limbs(column, array)
    bad = _out_of_range(leaf, array)
    if bad is not None:
        _raise_range(column, array, np.argwhere(bad)[0])
    return array


def _from_objects(column, array):
    """An object array (Python ints, enum members) as an integer array; a wide leaf's ints as limbs."""
    leaf = column.leaf
    flat = [item.value if leaf.enum is not None and isinstance(item, leaf.enum) else item
            for item in array.ravel().tolist()]
    for position, item in enumerate(flat):
        if not isinstance(item, int):
            raise CodecError(f"{_path_text(column.path)} must hold integers, not {item!r}")
        if not leaf.low <= item <= leaf.high:
            _raise_range(column, array, np.unravel_index(position, array.shape))
    if leaf.wide:
        mask = (1 << leaf.width) - 1
        return from_ints([item & mask for item in flat], leaf.width).reshape(*array.shape, limbs(leaf.width))
    return np.array(flat, dtype=np.uint64 if leaf.high > np.iinfo(np.int64).max else np.int64).reshape(array.shape)


def _out_of_range(leaf, array):
    """Mask of the values of ``array`` its leaf cannot represent (``None`` if all fit)."""
    if leaf.enum is not None:
        bad = ~np.isin(array, np.array(sorted(leaf.members), dtype=np.int64))
    elif array.dtype.kind == "u":
        if leaf.high >= np.iinfo(array.dtype).max:
            return None
        bad = array > np.uint64(leaf.high)
    else:
        info = np.iinfo(array.dtype)
        if leaf.low <= info.min and leaf.high >= info.max:
            return None
        bad = (array < max(leaf.low, info.min)) | (array > min(leaf.high, info.max))
    return bad if bad.any() else None


def _located(column, where):
    """``row 3: payload.x[2].y`` for the value at ``where`` (the row, if the array has one, and array indices)."""
    where, axes = tuple(int(i) for i in where), column.offsets.ndim
    if len(where) > axes:
        return f"row {where[0]}: {_path_text(column.path, where[1:])}"
    return _path_text(column.path, where)


def _raise_range(column, array, where):
    leaf = column.leaf
    value = array[tuple(where)]
    value = value.item() if isinstance(value, np.generic) else getattr(value, "value", value)
    if leaf.enum is not None:
        raise CodecError(f"{_located(column, where)} = {value!r} is not a member of {leaf.enum.__name__}")
    raise CodecError(f"{_located(column, where)} = {value!r} does not fit {leaf.describe()} "
                     f"(range [{leaf.low}, {leaf.high}])")


def _check_limbs(column, array):
    """A wide leaf given as limbs: the last axis must be its limbs, the top limb within the field's width."""
    leaf, count = column.leaf, limbs(column.leaf.width)
    if array.ndim == 0 or array.shape[-1] != count:
        raise CodecError(f"{_path_text(column.path)} is {leaf.width} bits wide: give {count} uint64 limbs in its "
                         f"last axis (or Python ints in an object array), not shape {array.shape}")
    top_bits = leaf.width - LIMB_BITS * (count - 1)
    bad = (array < 0).any(axis=-1) if array.dtype.kind == "i" else np.zeros(array.shape[:-1], dtype=bool)
    if top_bits < LIMB_BITS:
        bad |= (array[..., -1].astype(np.uint64) >> np.uint64(top_bits)) != 0
    if bad.any():
        where = tuple(np.argwhere(bad)[0])
        raise CodecError(f"{_located(column, where)}: limbs {array[where].tolist()} do not fit {leaf.describe()}")
    return array.astype(np.uint64)


def _element_geometry(column):
    """Per element (flattened array axes, and limbs of a wide leaf): bit offset and width."""
    leaf = column.leaf
    offsets = column.offsets.reshape(-1)
    if not leaf.wide:
        return offsets, np.full(offsets.shape, leaf.width, dtype=np.int64)
    count = limbs(leaf.width)
    offsets = (offsets[:, None] + np.arange(count) * LIMB_BITS).reshape(-1)
    widths = np.full(count, LIMB_BITS, dtype=np.int64)
    widths[-1] = leaf.width - LIMB_BITS * (count - 1)
    return offsets, np.tile(widths, len(offsets) // count)


def _byte_aligned(offsets, widths):
    """Whether the elements are whole, contiguous bytes of 1, 2, 4 or 8 (packed by copying bytes)."""
    width = int(widths[0]) if widths.size else 0
    return (widths.size > 0 and width in (8, 16, 32, 64) and bool((widths == width).all())
            and offsets[0] % 8 == 0 and bool((offsets == offsets[0] + np.arange(offsets.size) * width).all()))


def _masks(widths):
    return np.where(widths >= LIMB_BITS, _ALL_ONES,
                    (np.uint64(1) << np.minimum(widths, LIMB_BITS - 1).astype(np.uint64)) - np.uint64(1))


def _pack_leaf(words, column, array, count):
    leaf = column.leaf
    shape = (count, *column.offsets.shape) + ((limbs(leaf.width),) if leaf.wide else ())
    try:
        array = np.broadcast_to(array, shape)
    except ValueError:
        raise CodecError(f"{_path_text(column.path)} has shape {array.shape}, which does not fit a batch of "
                         f"{shape}") from None
    offsets, widths = _element_geometry(column)
    if not offsets.size or not count:
        return
    flat = array.reshape(count, offsets.size)
    if _byte_aligned(offsets, widths):
        size = int(widths[0]) // 8
        start = int(offsets[0]) // 8
        raw = np.ascontiguousarray(flat.astype(f"<u{size}", copy=False)).view(np.uint8)
        words.view(np.uint8).reshape(count, -1)[:, start:start + raw.shape[1]] = raw
        return
    limb, shift = offsets // LIMB_BITS, (offsets % LIMB_BITS).astype(np.uint64)
    masks = _masks(widths)
    spill = np.flatnonzero(shift + widths.astype(np.uint64) > LIMB_BITS)
    starts, targets = _runs(limb)
    spill_starts, spill_targets = _runs(limb[spill] + 1)
    step = max(1, _CHUNK_ELEMENTS // offsets.size)
    for first in range(0, count, step):
        bits = flat[first:first + step].astype(np.uint64) & masks
        block = words[first:first + step]
        block[:, targets] |= np.bitwise_or.reduceat(bits << shift, starts, axis=1)
        if spill.size:
            high = bits[:, spill] >> (np.uint64(LIMB_BITS) - shift[spill])
            block[:, spill_targets] |= np.bitwise_or.reduceat(high, spill_starts, axis=1)


def _runs(limb):
    """Starts of the runs of equal limb numbers (which never decrease along a leaf) and the limb of each run."""
    if not limb.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(limb)) + 1])
    return starts, limb[starts]


def _plan(tree):
    """The :class:`_Unpacker` of each leaf of a tree of columns."""
    if isinstance(tree, dict):
        return {name: _plan(child) for name, child in tree.items()}
    return _Unpacker(tree)


def _fill(plan, words):
    if isinstance(plan, dict):
        return {name: _fill(child, words) for name, child in plan.items()}
    return plan(words)


class _Unpacker:
    """One leaf out of packed words, its geometry worked out once per codec and field: a call is then a few numpy
    operations over the batch (whole bytes copied, a wide leaf's limbs shifted together, a leaf within one limb
    shifted and masked, or any other leaf element by element)."""

    def __init__(self, column):
        leaf = self.leaf = column.leaf
        self.suffix = (*column.offsets.shape,) + ((limbs(leaf.width),) if leaf.wide else ())
        offsets, widths = _element_geometry(column)
        self.elements = offsets.size
        if _byte_aligned(offsets, widths):
            self.kind = "bytes"
            size = int(widths[0]) // 8
            self.start, self.stop = int(offsets[0]) // 8, int(offsets[0]) // 8 + size * offsets.size
            self.view = f"<{'i' if leaf.signed and not leaf.wide else 'u'}{size}"
            self.dtype = np.uint64 if leaf.wide or (size == 8 and not leaf.signed) else np.int64
        elif leaf.wide and column.offsets.ndim == 0:
            self.kind, self.offset = "wide", int(offsets[0])
        else:
            self.limb, self.shift = offsets // LIMB_BITS, (offsets % LIMB_BITS).astype(np.uint64)
            self.masks = _masks(widths)
            self.spill = np.flatnonzero(self.shift + widths.astype(np.uint64) > LIMB_BITS)
            self.kind = "limb" if offsets.size == 1 and not self.spill.size else "bits"

    def __call__(self, words):
        leaf, count = self.leaf, words.shape[0]
        shape = (count, *self.suffix)
        if self.kind == "bytes":
            raw = np.ascontiguousarray(words.view(np.uint8).reshape(count, 8 * words.shape[1])[:, self.start:self.stop])
            return raw.view(self.view).reshape(shape).astype(self.dtype)
        if self.kind == "wide":
            return _unpack_wide(words, self.offset, leaf.width)
        if self.kind == "limb":
            out = (words[:, int(self.limb[0])] >> self.shift[0]) & self.masks[0]
        else:
            out = np.empty((count, self.elements), dtype=np.uint64)
            step = max(1, _CHUNK_ELEMENTS // max(1, self.elements))
            for first in range(0, count, step):
                block = words[first:first + step]
                bits = block[:, self.limb] >> self.shift
                if self.spill.size:
                    spill = self.spill
                    bits[:, spill] |= block[:, self.limb[spill] + 1] << (np.uint64(LIMB_BITS) - self.shift[spill])
                out[first:first + step] = bits & self.masks
        if leaf.wide:
            return out.reshape(shape)
        if leaf.signed and leaf.width:
            sign = np.uint64(1 << (leaf.width - 1))
            return ((out ^ sign) - sign).view(np.int64).reshape(shape)
        return out.reshape(shape) if leaf.width == LIMB_BITS else out.astype(np.int64).reshape(shape)


def _unpack_wide(words, offset, width):
    """The limbs of one field of ``width`` bits (more than 64) at bit ``offset`` of each word: the words' limbs
    from the field's first, shifted down as a whole (a memory line of a MEM_WRITE, 200,000 of them in a
    program's memory image, in a few operations over slices)."""
    first, shift = divmod(offset, LIMB_BITS)
    count = limbs(width)
    out = words[:, first:first + count] >> np.uint64(shift)
    if shift:
        high = words[:, first + 1:first + count + 1] << np.uint64(LIMB_BITS - shift)
        out[:, :high.shape[1]] |= high
    top = width - LIMB_BITS * (count - 1)
    if top < LIMB_BITS:
        out[:, -1] &= np.uint64((1 << top) - 1)
    return out


# Words --------------------------------------------------------------------------------------------------------------

def _check_words(words, width):
    words = np.asarray(words)
    if words.ndim == 1 and limbs(width) == 1:
        words = words[:, None]
    if words.ndim != 2 or words.shape[1] != limbs(width):
        raise CodecError(f"Packed words of {width} bits need shape (n, {limbs(width)}), not {words.shape}")
    if words.dtype.kind == "i":
        if (words < 0).any():
            raise CodecError(f"Packed word #{int(np.argwhere(words < 0)[0][0])} is negative")
    elif words.dtype.kind != "u":
        raise CodecError(f"Packed words must be unsigned integers, not {words.dtype}")
    words = np.ascontiguousarray(words, dtype=_WORD)
    top = width - LIMB_BITS * (words.shape[1] - 1)
    if top < LIMB_BITS:
        beyond = words[:, -1] >> np.uint64(top)
        if beyond.any():
            raise CodecError(f"Packed word #{int(np.flatnonzero(beyond)[0])} has bits set beyond its {width} bits")
    return words


def to_ints(words):
    """Python ints of ``(n, limbs)`` words (limb 0 lowest)."""
    words = np.asarray(words, dtype=_WORD)
    if words.ndim == 1:
        return words.tolist()
    size = 8 * words.shape[1]
    raw = np.ascontiguousarray(words).tobytes()
    from_bytes = int.from_bytes
    return [from_bytes(raw[start:start + size], "little") for start in range(0, len(raw), size)]


def from_ints(ints, width):
    """``(n, limbs)`` words of ``width`` bits from unsigned Python ints (or a numpy integer array).

    Raises
    ------
    CodecError
        If a value is negative or needs more than ``width`` bits (naming its index).
    """
    count = limbs(width)
    if isinstance(ints, np.ndarray) and ints.dtype.kind in "iu":
        values = ints
        if values.ndim != 1:
            raise CodecError(f"Expected a sequence of ints, not an array of shape {values.shape}")
        bad = (values < 0) | ((values.astype(np.uint64) >> np.uint64(width)) != 0 if width < LIMB_BITS else False)
        if np.any(bad):
            index = int(np.flatnonzero(bad)[0])
            raise CodecError(f"Value #{index} = {values[index]} is not {width} packed bits")
        words = np.zeros((len(values), count), dtype=_WORD)
        words[:, 0] = values.astype(np.uint64)
        return words
    if isinstance(ints, np.ndarray) and ints.ndim != 1:
        raise CodecError(f"Expected a sequence of ints, not an array of shape {ints.shape}")
    values = ints.tolist() if isinstance(ints, np.ndarray) else list(ints)
    size = 8 * count
    try:
        # Little-endian bytes, a word's limbs in a row: ints only (a negative or too wide one raises).
        raw = b"".join([int.to_bytes(value, size, "little") for value in values])
    except (TypeError, OverflowError):
        for index, value in enumerate(values):
            if not isinstance(value, (int, np.integer)):
                raise CodecError(f"Value #{index} = {value!r} is not an integer") from None
            if value < 0 or int(value) >> width:
                raise CodecError(f"Value #{index} = {value} is not {width} packed bits") from None
        # Only numpy integers in the list: the slow path.
        raw = b"".join([int(value).to_bytes(size, "little") for value in values])
    words = np.frombuffer(raw, dtype=_WORD).reshape(len(values), count).copy()
    top = width - LIMB_BITS * (count - 1)
    if top < LIMB_BITS and len(words):
        beyond = np.flatnonzero(words[:, -1] >> np.uint64(top))
        if beyond.size:
            index = int(beyond[0])
            raise CodecError(f"Value #{index} = {values[index]} is not {width} packed bits")
    return words


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE = np.full(256, 255, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16)
_NIBBLE[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)


def _digits(width):
    return max(1, -(-width // 4))


def format_hex(words, width):
    """One zero-padded hex word of ``ceil(width / 4)`` digits per line (each line ending in a newline).

    Raises
    ------
    CodecError
        If a word sets bits beyond ``width``.
    """
    words = _check_words(words, width)
    count, digits = words.shape[0], _digits(width)
    raw = words[:, ::-1].astype(">u8").view(np.uint8).reshape(count, 8 * words.shape[1])
    nibbles = np.empty((count, raw.shape[1] * 2), dtype=np.uint8)
    nibbles[:, 0::2], nibbles[:, 1::2] = raw >> 4, raw & 15
    lines = np.empty((count, digits + 1), dtype=np.uint8)
    lines[:, :digits] = _HEX[nibbles[:, -digits:]]
    lines[:, digits] = ord("\n")
    return lines.tobytes().decode("ascii")


def parse_hex(text, width):
    """``(n, limbs)`` words from hex words separated by white space (as written by :func:`format_hex` or by the
    Verilog ``%h`` format).

    Raises
    ------
    CodecError
        On a character that is not a hex digit, or a word beyond ``width`` bits.
    """
    digits = _digits(width)
    raw = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)
    # One word of exactly ``digits`` digits a line, as format_hex and the Verilog %h write: read without splitting.
    if raw.size % (digits + 1) == 0 and (raw[digits::digits + 1] == ord("\n")).all():
        nibbles = _NIBBLE[raw.reshape(-1, digits + 1)[:, :digits]]
        if not (nibbles == 255).any():
            return _from_nibbles(nibbles, width)
    tokens = text.split()
    count = len(tokens)
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=count)
    if count and lengths.max() > digits:
        index = int(np.flatnonzero(lengths > digits)[0])
        stripped = tokens[index].lstrip("0")
        if len(stripped) > digits:
            raise CodecError(f"Hex word #{index} {tokens[index]!r} has more than {digits} digits")
        tokens = [token.lstrip("0").rjust(digits, "0") if len(token) > digits else token for token in tokens]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=count)
    if count and (lengths != digits).any():
        tokens = [token.rjust(digits, "0") for token in tokens]
    chars = np.frombuffer("".join(tokens).encode("ascii", "replace"), dtype=np.uint8).reshape(count, digits)
    nibbles = _NIBBLE[chars]
    if (nibbles == 255).any():
        row, column = (int(i) for i in np.argwhere(nibbles == 255)[0])
        raise CodecError(f"Hex word #{row} {tokens[row]!r} has a character that is no hex digit "
                         f"({tokens[row][column]!r})")
    return _from_nibbles(nibbles, width)


def _from_nibbles(nibbles, width):
    """``(n, limbs)`` words from an ``(n, digits)`` array of hex digit values (most significant first)."""
    count, digits = nibbles.shape
    total = 16 * limbs(width)
    padded = np.zeros((count, total), dtype=np.uint8)
    padded[:, total - digits:] = nibbles
    raw = (padded[:, 0::2] << 4) | padded[:, 1::2]
    words = raw.view(">u8").reshape(count, limbs(width))[:, ::-1].astype(_WORD)
    return _check_words(words, width)
