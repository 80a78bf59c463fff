"""Devices that run timed traces: the one way the host drives the hardware, whatever runs it.

A :class:`Device` is the design seen from the host: a set of stream ports (:class:`Port`) and held inputs. It runs
a :class:`TimedTrace`: per input port, the payload words to send, each with an optional *not-before* cycle; per
output port, how many transfers to collect. It returns a :class:`TraceResult`: per output port the words and the
cycle each one left the design, per-port statistics and the length of the run. Implementations run the RTL on
Verilator or on the Amaranth simulator (:mod:`rpaccel.sim.device`), and later a cycle model or a board; this
module only describes the exchange and never simulates.

Time is counted in clock cycles from the end of reset: cycle 0 is the first cycle in which the design runs out of
reset, and a transfer happens *in cycle c* when ``valid`` and ``ready`` are both high at the clock edge that ends
cycle c. An input word with not-before cycle c is offered (``valid`` raised) in cycle c at the earliest; a word
without a cycle of its own is offered as soon as the word before it on its port has been taken, so the words of
a burst follow each other back to back. A not-before cycle already past when the word comes up means "as soon
as possible". Words on a port go in the order given, so not-before cycles must not decrease within a port.

A query of a replayed trace arriving at cycle ``t`` is one burst per port it uses, its first word held until
``t``::

    trace = TimedTrace()
    for arrival, commands in queries:
        trace.send("cmd", commands, at=arrival)   # the first command at the arrival, the rest right behind it
    trace.expect("out", len(queries))
    result = device.run(trace)
    latency = result.outputs["out"].cycles - arrivals
"""

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from .codec import LIMB_BITS, from_ints, limbs, to_ints

__all__ = ["NO_CYCLE", "Device", "DeviceError", "InputStream", "OutputStream", "Port", "PortStats", "TimedTrace",
           "TraceError", "TraceResult", "not_before_array"]

#: Not-before cycle of a word that has none of its own (it follows the word before it on its port).
NO_CYCLE = -1


class TraceError(ValueError):
    """A timed trace is malformed or does not fit the device; the message names the port and the transfer."""


class DeviceError(RuntimeError):
    """A run went wrong on the device (it did not finish in time, the simulator failed); the message says how."""


@dataclass(frozen=True)
class Port:
    """A stream port of a device.

    Attributes
    ----------
    name : str
        The port's name (nested interfaces joined with ``__``, as in the generated Verilog).
    direction : str
        ``"in"`` for a stream the design consumes, ``"out"`` for one it produces.
    width : int
        Width of the payload in bits (0 for a stream without payload).
    """

    name: str
    direction: str
    width: int

    def __post_init__(self):
        if self.direction not in ("in", "out"):
            raise ValueError(f"Port direction must be 'in' or 'out', not {self.direction!r}")
        if not isinstance(self.width, int) or self.width < 0:
            raise ValueError(f"Port width must be a non-negative integer, not {self.width!r}")


@dataclass
class PortStats:
    """Transfers on one port and the cycles of its first and last transfer (0 and 0 when there was none)."""

    transfers: int
    first_cycle: int
    last_cycle: int


@dataclass(frozen=True)
class InputStream:
    """The words a trace sends to one input port.

    Attributes
    ----------
    words : list of int or numpy.ndarray
        Packed payload words, in order: Python ints, or a ``(n, limbs)`` ``uint64`` array of packed words (limb 0
        lowest, as :mod:`rpaccel.host.driver.codec` packs them) when the trace was given them so.
    not_before : numpy.ndarray
        ``int64``, one per word: its not-before cycle, or :data:`NO_CYCLE`.
    """

    words: object
    not_before: np.ndarray

    @property
    def timed(self):
        """Whether any word carries a not-before cycle."""
        return bool((self.not_before != NO_CYCLE).any())

    def as_ints(self):
        """The words as a list of Python ints."""
        return to_ints(self.words) if isinstance(self.words, np.ndarray) else self.words

    def packed(self, width):
        """The words as ``(n, limbs)`` ``uint64`` packed words of ``width`` bits (no copy when given so)."""
        if isinstance(self.words, np.ndarray):
            return self.words
        return from_ints(self.words, width)


@dataclass(frozen=True)
class OutputStream:
    """The words a device delivered on one output port.

    Attributes
    ----------
    words : list of int
        Packed payload words, in the order the design delivered them.
    cycles : numpy.ndarray
        ``int64``, one per word: the cycle of its transfer.
    """

    words: list
    cycles: np.ndarray


@dataclass
class TraceResult:
    """Outcome of :meth:`Device.run`.

    Attributes
    ----------
    outputs : dict
        ``{output port: OutputStream}``. A port delivers at least its expected count; transfers it made before
        the run ended (the cycle in which the last expected transfer happened) are included too.
    ports : dict
        ``{port: PortStats}`` for every stream port, inputs included.
    cycles : int
        Length of the run: the cycle of the last transfer it waited for, plus one.
    wall_seconds : float
        Wall time of the run (any build excluded).
    """

    outputs: dict
    ports: dict
    cycles: int
    wall_seconds: float = 0.0


def not_before_array(port, cycles, count, *, first_index=0):
    """The not-before cycles of ``count`` words of port ``port`` as an ``int64`` array, checked.

    Parameters
    ----------
    port : str
        Name of the port (for error messages).
    cycles : sequence of (int or None) or numpy.ndarray
        A not-before cycle per word. A word without one is ``None`` in a sequence and :data:`NO_CYCLE` in an
        integer array (the form :attr:`InputStream.not_before` takes).
    count : int
        Number of words.
    first_index : int
        Index of the first word within its port (for error messages).

    Raises
    ------
    TraceError
        If the number of cycles is not ``count``, a cycle is not an integer, is negative, or is smaller than a
        cycle given before it.
    """
    start = first_index
    if isinstance(cycles, np.ndarray):
        if cycles.dtype.kind not in "iu":
            raise TraceError(f"Trace port {port!r}: not-before cycles must be integers, not {cycles.dtype}")
        negative = np.flatnonzero((cycles < 0) & (cycles != NO_CYCLE))
        if len(negative):
            index = int(negative[0])
            raise TraceError(f"Trace port {port!r}, transfer #{start + index}: not-before cycle "
                             f"{int(cycles[index])} is negative")
        array = cycles.astype(np.int64).ravel()
    else:
        cycles = list(cycles)
        for index, cycle in enumerate(cycles):
            if cycle is None:
                continue
            if isinstance(cycle, bool) or not isinstance(cycle, (int, np.integer)):
                raise TraceError(f"Trace port {port!r}, transfer #{start + index}: not-before cycle {cycle!r} "
                                 "is not an integer or None")
            if cycle < 0:
                raise TraceError(f"Trace port {port!r}, transfer #{start + index}: not-before cycle {cycle} "
                                 "is negative")
            if cycle >> 62:
                raise TraceError(f"Trace port {port!r}, transfer #{start + index}: not-before cycle {cycle} "
                                 "is too large")
        array = np.array([NO_CYCLE if cycle is None else cycle for cycle in cycles], dtype=np.int64)
    if len(array) != count:
        raise TraceError(f"Trace port {port!r}: {len(array)} not-before cycles for {count} words")
    given = np.flatnonzero(array != NO_CYCLE)
    drops = np.flatnonzero(np.diff(array[given]) < 0)
    if len(drops):
        earlier, later = given[drops[0]], given[drops[0] + 1]
        raise _decrease(port, start + int(later), int(array[later]), start + int(earlier), int(array[earlier]))
    return array


def _words_of(port, start, words):
    # ``words`` as a trace keeps them: a 2-D unsigned array stays packed words (checked against the port's width
    # by TimedTrace.check), anything else becomes a list of Python ints; a word that is no integer is an error.
    if isinstance(words, np.ndarray) and words.dtype.kind in "iu":
        if words.ndim == 2:
            if words.dtype.kind == "i" and (words < 0).any():
                index = int(np.argwhere(words < 0)[0][0])
                raise TraceError(f"Trace port {port!r}, transfer #{start + index}: packed word has a negative limb")
            return np.ascontiguousarray(words, dtype=np.uint64)
        return words.ravel().tolist()
    try:
        return [operator.index(word) for word in words]
    except TypeError:
        index, word = next((index, word) for index, word in enumerate(words) if not _is_integer(word))
        raise TraceError(f"Trace port {port!r}, transfer #{start + index}: word {word!r} is not an integer") from None


def _is_integer(value):
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _decrease(port, index, cycle, earlier_index, earlier_cycle):
    return TraceError(f"Trace port {port!r}, transfer #{index}: not-before cycle {cycle} comes before cycle "
                      f"{earlier_cycle} of transfer #{earlier_index} (cycles must not decrease within a port)")


class TimedTrace:
    """Stimulus of one run: timed words per input port, transfer counts per output port, held inputs.

    Build it with :meth:`send`, :meth:`expect` and :meth:`hold`; every call checks what it can without the
    device (cycles that decrease within a port or are negative), :meth:`check` the rest (unknown ports, words
    too wide for their port). Errors are :class:`TraceError` naming the port and the transfer's index.

    Parameters
    ----------
    inputs : dict, optional
        ``{input port: words}``, each sent with :meth:`send` (no not-before cycles).
    expect : dict, optional
        ``{output port: count}``, each given to :meth:`expect`.
    statics : dict, optional
        ``{input name: value}``, each given to :meth:`hold`.
    """

    def __init__(self, inputs=None, *, expect=None, statics=None):
        self._chunks = {}   # port -> the words of each send: a list of ints or a (n, limbs) uint64 array
        self._lengths = {}
        self._cycles = {}
        self._last = {}  # port -> (index, cycle) of its last word with a not-before cycle
        self._counts = {}
        self._statics = {}
        for port, words in (inputs or {}).items():
            self.send(port, words)
        for port, count in (expect or {}).items():
            self.expect(port, count)
        for name, value in (statics or {}).items():
            self.hold(name, value)

    def send(self, port, words, *, at=None, cycles=None):
        """Append ``words`` to input port ``port``.

        Parameters
        ----------
        port : str
            Name of the input port.
        words : sequence of int or numpy.ndarray
            Packed payload words: non-negative integers, or a ``(n, limbs)`` unsigned array of packed words (limb 0
            lowest, as :mod:`rpaccel.host.driver.codec` packs them), which reach a device without a conversion.
        at : int, optional
            Not-before cycle of the first word; the others follow it back to back (a burst, e.g. one query).
        cycles : sequence of (int or None) or numpy.ndarray, optional
            A not-before cycle for every word: ``None`` in a sequence, :data:`NO_CYCLE` in an integer array, for
            a word without one of its own. Not together with ``at``.

        Returns
        -------
        TimedTrace
            ``self``, so that calls chain.
        """
        if not isinstance(port, str):
            raise TraceError(f"Trace port name must be a string, not {port!r}")
        if at is not None and cycles is not None:
            raise TraceError(f"Trace port {port!r}: give either 'at' or 'cycles', not both")
        start = self._lengths.get(port, 0)
        words = _words_of(port, start, words)
        if cycles is None:
            not_before = np.full(len(words), NO_CYCLE, dtype=np.int64)
            if at is not None and len(words):
                not_before[0] = not_before_array(port, [at], 1, first_index=start)[0]
        else:
            not_before = not_before_array(port, cycles, len(words), first_index=start)
        given = np.flatnonzero(not_before != NO_CYCLE)
        if len(given):
            if port in self._last and not_before[given[0]] < self._last[port][1]:
                index, cycle = self._last[port]
                raise _decrease(port, start + int(given[0]), int(not_before[given[0]]), index, cycle)
            self._last[port] = (start + int(given[-1]), int(not_before[given[-1]]))
        self._chunks.setdefault(port, []).append(words)
        self._lengths[port] = start + len(words)
        self._cycles.setdefault(port, []).append(not_before)
        return self

    def expect(self, port, count):
        """Collect ``count`` transfers from output port ``port`` (ports not named collect none); returns
        ``self``."""
        if not isinstance(port, str):
            raise TraceError(f"Trace port name must be a string, not {port!r}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise TraceError(f"Trace port {port!r}: expected count must be a non-negative integer, not {count!r}")
        self._counts[port] = int(count)
        return self

    def hold(self, name, value):
        """Hold the non-stream input ``name`` at the packed value ``value`` for the whole run; returns ``self``."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise TraceError(f"Held input {name!r}: value must be a non-negative integer, not {value!r}")
        self._statics[name] = int(value)
        return self

    @property
    def inputs(self):
        """``{input port: InputStream}``."""
        return {port: InputStream(_joined(chunks), np.concatenate(self._cycles[port]))
                for port, chunks in self._chunks.items()}

    @property
    def counts(self):
        """``{output port: number of transfers to collect}``."""
        return dict(self._counts)

    @property
    def statics(self):
        """``{input name: packed value}`` held during the run."""
        return dict(self._statics)

    def check(self, ports, statics=None):
        """Check the trace against a device's ports; raise :class:`TraceError` on the first problem.

        Parameters
        ----------
        ports : iterable of Port
            The device's stream ports.
        statics : dict, optional
            ``{name: width}`` of the device's held (non-stream) inputs.
        """
        ports = {p.name: p for p in ports}
        inputs = [name for name, p in ports.items() if p.direction == "in"]
        outputs = [name for name, p in ports.items() if p.direction == "out"]
        for port, chunks in self._chunks.items():
            if port not in inputs:
                raise TraceError(f"Trace sends to {port!r}, which is not an input stream of the device "
                                 f"(inputs: {', '.join(inputs) or 'none'})")
            start = 0
            for words in chunks:
                _check_words(port, start, words, ports[port].width)
                start += len(words)
        for port in self._counts:
            if port not in outputs:
                raise TraceError(f"Trace expects transfers from {port!r}, which is not an output stream of the "
                                 f"device (outputs: {', '.join(outputs) or 'none'})")
        statics = statics or {}
        for name, value in self._statics.items():
            if name not in statics:
                raise TraceError(f"Trace holds {name!r}, which is not a held input of the device "
                                 f"(held inputs: {', '.join(statics) or 'none'})")
            if value >> statics[name]:
                raise TraceError(f"Held input {name!r}: value {value} does not fit {statics[name]} bits")


def _joined(chunks):
    # One port's words: one packed array when every send gave packed words of one size, else Python ints.
    if all(isinstance(words, np.ndarray) for words in chunks) and len({words.shape[1] for words in chunks}) == 1:
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return [word for words in chunks for word in (to_ints(words) if isinstance(words, np.ndarray) else words)]


def _check_words(port, start, words, width):
    if isinstance(words, np.ndarray):
        if words.shape[1] != limbs(width):
            raise TraceError(f"Trace port {port!r}, transfers #{start} on: packed words of {words.shape[1]} limbs, "
                             f"the port's {width} bits take {limbs(width)}")
        top = width - LIMB_BITS * (words.shape[1] - 1)
        beyond = np.flatnonzero(words[:, -1] >> np.uint64(top)) if top < LIMB_BITS else ()
        if len(beyond):
            raise TraceError(f"Trace port {port!r}, transfer #{start + int(beyond[0])}: packed word has bits set "
                             f"beyond the port's {width} bits")
        return
    if not words or (min(words) >= 0 and max(words) >> width == 0):
        return
    index, word = next((index, word) for index, word in enumerate(words) if word < 0 or word >> width)
    raise TraceError(f"Trace port {port!r}, transfer #{start + index}: word {word} does not fit {width} bits")


class Device(ABC):
    """A design the host can run timed traces on (the RTL in a simulator, a cycle model, a board).

    Subclasses give :attr:`ports` and :attr:`statics` and implement :meth:`run`, calling :meth:`check` first.
    Every implementation counts cycles from the end of reset as the module documentation says, so the same
    trace gives the same cycles on every device that models the design exactly.
    """

    @property
    @abstractmethod
    def ports(self):
        """The stream ports, a tuple of :class:`Port`."""

    @property
    def statics(self):
        """``{name: width}`` of the inputs that belong to no stream, held for a whole run."""
        return {}

    @property
    def inputs(self):
        """Names of the input stream ports."""
        return [p.name for p in self.ports if p.direction == "in"]

    @property
    def outputs(self):
        """Names of the output stream ports."""
        return [p.name for p in self.ports if p.direction == "out"]

    def check(self, trace):
        """Raise :class:`TraceError` if ``trace`` does not fit this device."""
        if not isinstance(trace, TimedTrace):
            raise TypeError(f"Expected a TimedTrace, not {trace!r}")
        trace.check(self.ports, self.statics)

    @abstractmethod
    def run(self, trace, *, max_cycles=100_000_000):
        """Run ``trace`` from reset and return a :class:`TraceResult`.

        Parameters
        ----------
        trace : TimedTrace
            What to send and what to collect.
        max_cycles : int
            Fail if the run has not collected every expected transfer after this many cycles.
        """

