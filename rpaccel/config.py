"""Accelerator configuration: one frozen dataclass, named presets, derived values and checks in one place.

The RTL, the simulation models and the host runtime all read their parameters from an :class:`AccelConfig`, so
no size is typed twice. Presets are built from :data:`SMALL` with :func:`dataclasses.replace`; a custom
configuration is made the same way::

    from dataclasses import replace
    from rpaccel.config import preset
    cfg = replace(preset("small"), array_rows=8, array_cols=8)

or from ``field=value`` text, as the command line's ``--set`` gives it (the name then records the changes)::

    cfg = preset("tiny").with_settings(["array_rows=8", "splits=1,2"])    # named "tiny+array_rows=8+splits=1,2"
"""

import difflib
from dataclasses import dataclass, fields, replace

__all__ = ["NO_TARGET", "PRESETS", "TARGETS", "AccelConfig", "ConfigError", "preset"]


class ConfigError(ValueError):
    """An accelerator configuration is invalid (the message names the field and value)."""


def _is_pow2(n):
    return n > 0 and n & (n - 1) == 0


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


def _non_negative_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, not {value!r}")


#: The synthesis targets, by name: the one list of them (:data:`rpaccel.flow.synth.TARGETS` gives each its board).
TARGETS = ("ice40-up5k", "ecp5-85f")
#: The ``target`` of a configuration meant for modelling only (no FPGA).
NO_TARGET = "none"


def _parse_value(field, text):
    """``text`` as a value of ``field``'s type (int, float, tuple of ints or str)."""
    kind = field.type
    try:
        if kind is int:
            return int(text, 0)
        if kind is float:
            return float(text)
        if kind is tuple:
            return tuple(int(part, 0) for part in text.split(","))
    except ValueError:
        what = {int: "an integer", float: "a number", tuple: "comma-separated integers"}[kind]
        raise ConfigError(f"{field.name} must be {what}, not {text!r}") from None
    return text


def _format_value(value):
    """A field's value as ``--set`` takes it (the inverse of :func:`_parse_value`)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class AccelConfig:
    """Parameters of one RPAccel instance.

    Parameters
    ----------
    name : str
        Name of the configuration (a preset name, or ``"custom"``).
    array_rows, array_cols : int
        Systolic array size R x C. Rows hold the K (input) dimension of a weight tile, columns the N (output)
        dimension. Both must be multiples of ``block``.
    block : int
        Side B of the B x B blocks the array is built from; every sub-array is a union of whole blocks.
    splits : tuple of int
        Numbers of independent sub-arrays the array can be split into at run time. ``1`` is the whole array;
        ``2`` halves it by columns; ``4**k`` makes a ``2**k x 2**k`` grid (RecPipe's 4x64x64, 16x32x32, ...).
    array_dsp_pes : int
        Largest number of processing elements whose multiplier is a hard DSP multiplier; the others get LUT
        multipliers (:func:`rpaccel.rtl.pe.lut_multiply`). Sized so that the array, the post-processors
        (two DSPs each, one per array column), the embedding unit's requantisers (one each), the interaction
        unit's requantisers (two each) and the joiner's fit the target's DSP blocks. When it covers the whole
        array, the interaction unit's multipliers are hard ones too
        (:meth:`rpaccel.rtl.interaction.Interaction.for_config`): 109 of 156 on ``small``.
    weight_buffer_words, act_buffer_words : int
        Depth of the MLP engine's on-chip weight and activation buffers, in array-width words
        (a weight word is one row of a C-wide tile, an activation word one R-wide input vector).
    acc_buffer_words : int
        Depth of the MLP engine's accumulator buffer in rows of C int32 partial sums: the most items one layer
        pass of the whole array works on (split arrays share it, see :mod:`rpaccel.rtl.lanemem`).
    max_emb_dim : int
        Largest embedding dimension the embedding unit handles.
    max_tables : int
        Largest number of embedding tables per model (the interaction unit takes up to ``max_tables + 1`` vectors).
    emb_tables : int
        Embedding tables the embedding unit holds, over every model loaded at once (a multi-stage pipeline's
        models each have their own tables: RM-small and RM-large need 52); at least ``max_tables``.
    static_cache_rows : int
        Embedding rows of ``max_emb_dim`` bytes held by the static (profiled, tag-free) cache, over all tables
        (narrower rows pack densely: twice as many rows of half the width).
    dyn_cache_sets, dyn_cache_ways, dyn_cache_line_bytes : int
        Geometry of the dynamic set-associative cache; ``dyn_cache_ways = 0`` disables it.
    max_outstanding_misses : int
        Lines the embedding unit can have requested from memory and not yet consumed (misses in flight).
    max_pooling : int
        Largest pooling factor (rows summed into one pooled vector); sets the pooling accumulators' width.
    emb_requant_lanes : int
        Pooled elements the embedding unit requantises per cycle (a power of two, at most ``max_emb_dim``).
    mem_latency_cycles, mem_bytes_per_cycle : int
        Latency and bandwidth of the off-chip memory model.
    mem_latency_jitter : int
        Most extra cycles a request to the memory model may take, pseudo-random per request (0: a fixed latency).
    mem_bytes : int
        Capacity of the off-chip memory holding the embedding tables (a power of two; sets address widths).
    join_buffer_words : int
        Depth of each lane's FIFO of pooled vectors in the joiner (a power of two), in words of ``array_rows``
        int8; a vector of ``d`` elements takes ``ceil(d / array_rows)`` words. The embedding unit runs ahead of a
        lane's MLP by at most this much pooled data (:mod:`rpaccel.rtl.accel.join`). At least one item's pooled
        vectors at the largest size (``max_tables`` vectors of ``max_emb_dim``).
    join_output_words : int
        Depth of each lane's buffer of interaction output in the joiner (a power of two), in words of
        ``array_rows`` int8: how much output the interaction unit may leave for a lane that is not yet taking it
        (a sub-batch's lets a lane compute its next bottom MLP before taking it). At least one item's output at
        the largest size (``max_tables + 1`` vectors of ``max_emb_dim``).
    k_max : int
        Largest k a top-k unit supports.
    topk_units : int
        Number of top-k units working on independent streams.
    filter_units : int
        Filter units (:mod:`rpaccel.rtl.filter`): the k best of a stage's candidates as a set, for the next stage.
    filter_capacity : int
        Most candidates of one query a filter unit takes (a power of two), and so the largest k of a filtering
        stage (RecPipe's 4,096 -> 512 needs 4,096).
    clock_mhz : float
        Clock frequency the design is meant to meet on its ``target``.
    target : str
        Synthesis target the preset is sized for: one of :data:`TARGETS` (``"ice40-up5k"``, ``"ecp5-85f"``), or
        :data:`NO_TARGET` (``"none"``) for a configuration meant for modelling only.
    """

    name: str = "custom"
    # Systolic array and MLP engine.
    array_rows: int = 8
    array_cols: int = 8
    block: int = 4
    splits: tuple = (1, 2)
    array_dsp_pes: int = 64
    weight_buffer_words: int = 8192
    act_buffer_words: int = 8192
    acc_buffer_words: int = 32
    # Embedding unit and caches.
    max_emb_dim: int = 32
    max_tables: int = 32
    emb_tables: int = 64
    static_cache_rows: int = 1024
    dyn_cache_sets: int = 512
    dyn_cache_ways: int = 4
    dyn_cache_line_bytes: int = 16
    max_outstanding_misses: int = 128
    max_pooling: int = 1024
    emb_requant_lanes: int = 4
    mem_latency_cycles: int = 100
    mem_bytes_per_cycle: int = 16
    mem_latency_jitter: int = 0
    mem_bytes: int = 1 << 25
    # Joiner (between the embedding unit, the bottom MLP and the interaction unit).
    join_buffer_words: int = 1024
    join_output_words: int = 1024
    # Top-k and filter units.
    k_max: int = 64
    topk_units: int = 1
    filter_units: int = 1
    filter_capacity: int = 4096
    # Implementation.
    clock_mhz: float = 125.0
    target: str = "ecp5-85f"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"Configuration name must be a non-empty string, not {self.name!r}")
        for f in fields(self):
            if f.type is int or f.type == "int":
                value = getattr(self, f.name)
                if f.name in ("static_cache_rows", "dyn_cache_ways", "array_dsp_pes", "mem_latency_jitter"):
                    _non_negative_int(f.name, value)
                else:
                    _positive_int(f.name, value)
        if self.array_rows % self.block:
            raise ConfigError(
                f"array_rows must be a multiple of block ({self.block}), not {self.array_rows!r}")
        if self.array_cols % self.block:
            raise ConfigError(
                f"array_cols must be a multiple of block ({self.block}), not {self.array_cols!r}")
        if not isinstance(self.splits, tuple) or not self.splits or 1 not in self.splits:
            raise ConfigError(f"splits must be a tuple of sub-array counts including 1, not {self.splits!r}")
        for n in self.splits:
            self.subarray_shape(n)  # raises on a split the array cannot make
        if self.emb_tables < self.max_tables:
            raise ConfigError(f"emb_tables must be at least max_tables ({self.max_tables}), not {self.emb_tables!r}")
        if not _is_pow2(self.filter_capacity) or self.filter_capacity < 2:
            raise ConfigError(f"filter_capacity must be a power of two of at least 2, not {self.filter_capacity!r}")
        if not _is_pow2(self.dyn_cache_sets):
            raise ConfigError(f"dyn_cache_sets must be a power of two, not {self.dyn_cache_sets!r}")
        if not _is_pow2(self.dyn_cache_line_bytes):
            raise ConfigError(
                f"dyn_cache_line_bytes must be a power of two, not {self.dyn_cache_line_bytes!r}")
        if not _is_pow2(self.max_emb_dim):
            raise ConfigError(f"max_emb_dim must be a power of two, not {self.max_emb_dim!r}")
        if not _is_pow2(self.emb_requant_lanes) or self.emb_requant_lanes > self.max_emb_dim:
            raise ConfigError(f"emb_requant_lanes must be a power of two of at most max_emb_dim "
                              f"({self.max_emb_dim}), not {self.emb_requant_lanes!r}")
        if not _is_pow2(self.mem_bytes):
            raise ConfigError(f"mem_bytes must be a power of two, not {self.mem_bytes!r}")
        vectors, dim, rows = self.max_tables + 1, self.max_emb_dim, self.array_rows
        widest = max(dim + vectors * (vectors - 1) // 2, vectors * dim)     # an item's interaction output
        for name, least in (("join_buffer_words", (vectors - 1) * -(-dim // rows)),
                            ("join_output_words", -(-widest // rows))):
            value = getattr(self, name)
            if not _is_pow2(value):
                raise ConfigError(f"{name} must be a power of two, not {value!r}")
            if value < least:
                raise ConfigError(f"{name} must hold one item of {self.max_tables} tables of {self.max_emb_dim} "
                                  f"elements ({least} words), not {value!r}")
        if not isinstance(self.clock_mhz, (int, float)) or not self.clock_mhz > 0:
            raise ConfigError(f"clock_mhz must be a positive number, not {self.clock_mhz!r}")
        if self.target not in (*TARGETS, NO_TARGET):
            raise ConfigError(f"target must be one of {', '.join((*TARGETS, NO_TARGET))}, not {self.target!r}")

    def with_settings(self, settings):
        """A copy with fields changed by ``field=value`` texts (the command line's ``--set``), checked.

        Each value is parsed by its field's type: an integer (``0x`` and ``_`` allowed), a number,
        comma-separated integers for ``splits`` (``splits=1,2,4``), or text. A later setting of a field
        wins. Unless ``name`` is set, the copy is named after this configuration and the changes
        (``"tiny+array_rows=8"``), so build folders and results say which configuration they measured.

        Parameters
        ----------
        settings : iterable of str
            ``"field=value"`` texts.

        Raises
        ------
        ConfigError
            If a text is not ``field=value``, names no field (the message lists the close names), has a value
            that does not parse as the field's type, or gives a configuration that fails the checks.
        """
        settings = list(settings)
        by_name = {f.name: f for f in fields(self)}
        changes = {}
        for text in settings:
            field_name, equals, value = text.partition("=")
            field_name = field_name.strip()
            if not equals or not field_name:
                raise ConfigError(f"a setting must be field=value, not {text!r}")
            if field_name not in by_name:
                close = difflib.get_close_matches(field_name, by_name, n=3, cutoff=0.6)
                known = (f"did you mean {', '.join(close)}?" if close else f"fields: {', '.join(by_name)}")
                raise ConfigError(f"unknown configuration field {field_name!r} in {text!r}; {known}")
            changes.pop(field_name, None)
            changes[field_name] = _parse_value(by_name[field_name], value.strip())
        if not changes:
            return self
        if "name" not in changes:
            changes["name"] = "+".join([self.name, *(f"{k}={_format_value(v)}" for k, v in changes.items())])
        try:
            return replace(self, **changes)
        except ConfigError as error:
            raise ConfigError(f"{self.name} with {' '.join(settings)}: {error}") from None

    # Derived values ---------------------------------------------------------------------------------------

    @property
    def pes(self):
        """Number of processing elements (R * C)."""
        return self.array_rows * self.array_cols

    @property
    def peak_macs_per_cycle(self):
        """Multiply-accumulates per cycle with every PE busy."""
        return self.pes

    @property
    def clock_period_ns(self):
        """Target clock period in nanoseconds."""
        return 1e3 / self.clock_mhz

    @property
    def dyn_cache_bytes(self):
        """Data capacity of the dynamic cache in bytes (tags not counted)."""
        return self.dyn_cache_sets * self.dyn_cache_ways * self.dyn_cache_line_bytes

    def static_cache_bytes(self, emb_dim=None):
        """Data capacity of the static cache in bytes for rows of ``emb_dim`` int8 values."""
        return self.static_cache_rows * (self.max_emb_dim if emb_dim is None else emb_dim)

    def subarray_shape(self, n):
        """Shape (rows, cols) of each sub-array when the array is split into ``n`` parts.

        Raises
        ------
        ConfigError
            If the array cannot be split into ``n`` sub-arrays made of whole blocks.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ConfigError(f"Sub-array count must be a positive integer, not {n!r}")
        if n == 1:
            rows, cols = self.array_rows, self.array_cols
        elif n == 2:
            rows, cols = self.array_rows, self.array_cols // 2
        elif _is_pow2(n) and (n.bit_length() - 1) % 2 == 0:
            side = 1 << ((n.bit_length() - 1) // 2)
            rows, cols = self.array_rows // side, self.array_cols // side
        else:
            raise ConfigError(f"Sub-array count must be 1, 2 or a power of four, not {n!r}")
        if rows == 0 or cols == 0 or rows % self.block or cols % self.block:
            raise ConfigError(
                f"A {self.array_rows}x{self.array_cols} array of {self.block}x{self.block} blocks cannot be "
                f"split into {n} sub-arrays")
        return rows, cols

    def describe(self):
        """A dict of every field and the main derived values (for reports and ``--json`` output)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["splits"] = list(self.splits)
        out["pes"] = self.pes
        out["dyn_cache_bytes"] = self.dyn_cache_bytes
        out["static_cache_bytes"] = self.static_cache_bytes()
        return out


SMALL = AccelConfig(name="small")

PRESETS = {
    # iCEBreaker (iCE40 UP5K: 5280 LUT4, 8 DSP, 30 x 4 kbit EBR, 4 x 256 kbit SPRAM).
    "tiny": replace(
        SMALL, name="tiny", array_rows=4, array_cols=4, block=2, splits=(1, 2, 4), array_dsp_pes=0,
        weight_buffer_words=256, act_buffer_words=256, acc_buffer_words=64, max_emb_dim=16, max_tables=8, emb_tables=16,
        static_cache_rows=128, dyn_cache_sets=32, dyn_cache_ways=2, dyn_cache_line_bytes=16,
        max_outstanding_misses=32, max_pooling=256, emb_requant_lanes=4, mem_bytes_per_cycle=4,
        mem_bytes=1 << 17, join_buffer_words=128, join_output_words=128, k_max=16, topk_units=1,
        filter_capacity=256, clock_mhz=30.0,
        target="ice40-up5k"),
    # ULX3S (ECP5-85F: 83.6k LUT4, 156 18x18 multipliers, 208 x 18 kbit EBR); the default. Sized so that the whole
    # chip (8 x 8 array split in two, embedding unit with 32-byte rows requantised 4 elements a cycle, interaction,
    # one top-k unit of 64, one filter unit of 4,096) packs within 80% of the logic cells (docs/chip.md, "Fit and
    # timing"; results.md, chip-accel); clock_mhz becomes the routed Fmax once it routes. The 32 accumulator rows
    # and the 4 requantisation lanes (LUT RAM and LUTs the router needs) cost RecPipe's pipelines at most 0.4% of
    # their cycles in the timed model: only split 1's sub-batch shrinks (41 to 32 items; the act buffer already
    # holds a split lane's to 20), and halving the requantiser's lanes changes no pipeline's cycles.
    "small": SMALL,
    # RPAccel at the scale of the RecPipe paper (for modelling, not for an FPGA in this project); 48 tables per model
    # hold every DeepRecSys model of the zoo that runs end to end (MT-WnD has 43).
    "paper": replace(
        SMALL, name="paper", array_rows=128, array_cols=128, block=16, splits=(1, 2, 4, 16, 64),
        array_dsp_pes=128 * 128, emb_tables=128, max_emb_dim=64, max_tables=48,
        weight_buffer_words=16384, act_buffer_words=16384, static_cache_rows=16384, dyn_cache_sets=4096,
        acc_buffer_words=64, emb_requant_lanes=16,
        dyn_cache_ways=8, dyn_cache_line_bytes=32, max_outstanding_misses=32, mem_bytes_per_cycle=256,
        mem_bytes=1 << 34, join_buffer_words=16384, join_output_words=16384, k_max=256, topk_units=16,
        filter_units=4, filter_capacity=16384,
        target="none"),
}


def preset(name):
    """Return the named preset.

    Raises
    ------
    ConfigError
        If there is no preset of that name (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
