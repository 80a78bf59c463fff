"""Devices that run timed traces (:class:`rpaccel.host.driver.device.Device`) on simulated RTL.

:class:`PlayerDevice` runs a trace on Verilator through the file-driven :class:`~rpaccel.sim.player.Player`: the
self-clocked testbench holds each input word until its not-before cycle and writes the cycle of every output
transfer, so Python is not woken during the run, however long. :class:`SimulatorDevice` runs the same trace on the
Amaranth simulator with one testbench that wakes every cycle (for small configurations and for checking the
Player). Both count cycles from the end of reset and draw random stalls from the same per-port generators
(:func:`~rpaccel.sim.streams.xorshift_stalls`), so on the same design, trace, ``pause`` and ``seed`` they return
the same words on the same cycles.

Example::

    device = PlayerDevice(StreamFIFO, 4)
    trace = TimedTrace().send("i", words, at=1000).expect("o", len(words))
    result = device.run(trace)
    result.outputs["o"].cycles       # the cycle each word left the design, 1002 onwards
"""

import time

import numpy as np
from amaranth.hdl import Shape, Value
from amaranth.lib.wiring import In

from ..host.driver.device import Device, DeviceError, OutputStream, Port, PortStats, TraceResult
from .player import Player
from .streams import SimulationTimeout, port_seed, run_simulation, xorshift_stalls

__all__ = ["PlayerDevice", "SimulatorDevice", "component_ports"]

_STREAM_MEMBERS = ("valid", "ready", "payload")


def component_ports(component):
    """The stream ports and held inputs of an Amaranth component, named as in its generated Verilog.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component

    Returns
    -------
    (tuple of Port, dict)
        The stream ports (members ``valid``, ``ready`` and ``payload`` under one path; ``in`` when the component
        consumes the stream), and ``{name: width}`` of the inputs that belong to no stream.
    """
    members = {}
    for path, member, _value in component.signature.flatten(component):
        members["__".join(str(part) for part in path)] = member
    ports, stream_members = [], set()
    for name, member in members.items():
        if not name.endswith("__valid"):
            continue
        base = name.removesuffix("__valid")
        if f"{base}__ready" not in members:
            continue
        payload = members.get(f"{base}__payload")
        width = Shape.cast(payload.shape).width if payload is not None else 0
        ports.append(Port(base, "in" if member.flow == In else "out", width))
        stream_members |= {f"{base}__{part}" for part in _STREAM_MEMBERS}
    statics = {name: Shape.cast(member.shape).width for name, member in members.items()
               if member.flow == In and name not in stream_members}
    return tuple(ports), statics


class PlayerDevice(Device):
    """Run timed traces on Verilator through the file-driven :class:`~rpaccel.sim.player.Player`.

    Parameters
    ----------
    factory : callable
        Builds the component (e.g. its class), as for :class:`~rpaccel.sim.player.Player`.
    *args, **kwargs
        Arguments of ``factory``.
    """

    def __init__(self, factory, *args, **kwargs):
        self.player = Player(factory, *args, **kwargs)
        self._ports = tuple(Port(s.name, "in" if s.direction == "i" else "out", s.width)
                            for s in self.player.streams)

    @property
    def ports(self):
        return self._ports

    @property
    def statics(self):
        return dict(self.player.statics)

    def run(self, trace, *, pause=0.0, seed=1, max_cycles=100_000_000, direct=True, waves=None, name=None):
        """Run ``trace`` and return a :class:`~rpaccel.host.driver.device.TraceResult`.

        Parameters
        ----------
        trace : TimedTrace
            What to send and what to collect.
        pause : float or dict
            Probability of an idle input and of a back-pressured output cycle, or ``{port: probability}``.
        seed : int
            Seed of the stall generators.
        max_cycles : int
            Fail with :class:`~rpaccel.sim.player.PlayerError` (a
            :class:`~rpaccel.host.driver.device.DeviceError`) if the run has not finished after this many cycles.
        direct : bool
            Run the stand-alone Verilator binary (the default) or the testbench under cocotb.
        waves : bool, optional
            Dump a waveform (under cocotb, see :meth:`Player.run <rpaccel.sim.player.Player.run>`).
        name : str, optional
            Name of the run (for the waveform file).
        """
        self.check(trace)
        inputs = trace.inputs
        counts = trace.counts
        result = self.player.run(
            {port: stream.words for port, stream in inputs.items()},
            not_before={port: stream.not_before for port, stream in inputs.items() if stream.timed},
            expect={port: counts.get(port, 0) for port in self.outputs}, statics=trace.statics, pause=pause,
            seed=seed, max_cycles=max_cycles, waves=waves, name=name, packed=True, direct=direct,
            output_cycles=True)
        outputs = {port: OutputStream(result.outputs[port], result.output_cycles[port]) for port in self.outputs}
        return TraceResult(outputs=outputs, ports=result.ports, cycles=result.cycles,
                           wall_seconds=result.wall_seconds)


class _Stream:
    # One stream port of the simulated design and what the testbench has done on it.
    def __init__(self, signals, port, stalls):
        self.name = port.name
        self.valid, self.ready = signals[f"{port.name}__valid"], signals[f"{port.name}__ready"]
        payload = signals.get(f"{port.name}__payload")
        self.payload = Value.cast(payload) if payload is not None else None
        self.stalls = stalls
        self.stats = PortStats(0, 0, 0)

    def record(self, cycle):
        if self.stats.transfers == 0:
            self.stats.first_cycle = cycle
        self.stats.last_cycle = cycle
        self.stats.transfers += 1


class _Input(_Stream):
    # The Player's input logic: a word is offered from its not-before cycle on, unless the cycle stalls, and
    # stays on offer until it is taken.
    def __init__(self, signals, port, stalls, stream):
        super().__init__(signals, port, stalls)
        self.words = stream.as_ints() if stream is not None else []
        self.not_before = stream.not_before.tolist() if stream is not None else []
        self.index = 0  # the next word to offer, or the one on offer
        self.offered = self.taken = False

    def set_up(self, ctx, cycle):
        stall = next(self.stalls)
        if self.offered and not self.taken:
            return
        self.offered = self.index < len(self.words) and not stall and cycle >= self.not_before[self.index]
        ctx.set(self.valid, self.offered)
        if self.offered and self.payload is not None:
            ctx.set(self.payload, self.words[self.index])

    def sampled(self, cycle, ready):
        self.taken = self.offered and bool(ready)
        if self.taken:
            self.record(cycle)
            self.index += 1

    @property
    def finished(self):
        return self.index == len(self.words)


class _Output(_Stream):
    def __init__(self, signals, port, stalls, count):
        super().__init__(signals, port, stalls)
        self.count = count
        self.ready_now = False
        self.words, self.cycles = [], []

    def set_up(self, ctx):
        self.ready_now = not next(self.stalls)
        ctx.set(self.ready, self.ready_now)

    def sampled(self, cycle, valid, word):
        if self.ready_now and valid:
            self.record(cycle)
            self.words.append(word if self.payload is not None else 0)
            self.cycles.append(cycle)

    @property
    def finished(self):
        return self.stats.transfers >= self.count


class SimulatorDevice(Device):
    """Run timed traces on the Amaranth simulator: Python is woken every cycle, so keep the design small.

    The testbench does what the Player's does (see :mod:`rpaccel.sim.player`), cycle for cycle: cycle 0 is the
    first cycle of the simulation, an input word is offered from its not-before cycle on and stays on offer until
    it is taken, and the run ends with the cycle in which the last expected transfer happens.

    Parameters
    ----------
    factory : callable
        Builds the component (e.g. its class); called once to read its ports and once per run.
    *args, **kwargs
        Arguments of ``factory``.
    """

    def __init__(self, factory, *args, **kwargs):
        self._factory, self._args, self._kwargs = factory, args, kwargs
        component = factory(*args, **kwargs)
        component._MustUse__silence = True  # only inspected, never elaborated
        self._ports, self._statics = component_ports(component)

    @property
    def ports(self):
        return self._ports

    @property
    def statics(self):
        return dict(self._statics)

    def run(self, trace, *, pause=0.0, seed=1, max_cycles=1_000_000, waves=None, name="device"):
        """Run ``trace`` and return a :class:`~rpaccel.host.driver.device.TraceResult`.

        Parameters
        ----------
        trace : TimedTrace
            What to send and what to collect.
        pause : float or dict
            Probability of an idle input and of a back-pressured output cycle, or ``{port: probability}``.
        seed : int
            Seed of the stall generators (the same patterns as the Player's with the same seed).
        max_cycles : int
            Fail with :class:`~rpaccel.host.driver.device.DeviceError` if the run has not finished after this
            many cycles.
        waves : bool, optional
            Write a VCD file (see :func:`~rpaccel.sim.streams.run_simulation`).
        name : str
            Name of the run (for the waveform file).
        """
        self.check(trace)
        pauses = pause if isinstance(pause, dict) else {p.name: pause for p in self.ports}
        stalls = {}
        for port in self.ports:
            probability = pauses.get(port.name, 0.0)
            if not 0.0 <= probability < 1.0:
                raise DeviceError(f"Pause probability of port {port.name!r} must be in [0, 1), not {probability!r}")
            stalls[port.name] = xorshift_stalls(probability, port_seed(seed, port.name))
        dut = self._factory(*self._args, **self._kwargs)
        signals = {"__".join(str(part) for part in path): value
                   for path, _member, value in dut.signature.flatten(dut)}
        streams, counts = trace.inputs, trace.counts
        inputs = [_Input(signals, p, stalls[p.name], streams.get(p.name)) for p in self.ports if p.direction == "in"]
        outputs = [_Output(signals, p, stalls[p.name], counts.get(p.name, 0))
                   for p in self.ports if p.direction == "out"]
        probes = [i.ready for i in inputs] + [o.valid for o in outputs] + \
                 [o.payload if o.payload is not None else o.valid for o in outputs]
        end = {}

        async def bench(ctx):
            for held, value in trace.statics.items():
                ctx.set(signals[held], value)
            cycle = 0
            while True:
                for i in inputs:
                    i.set_up(ctx, cycle)
                for o in outputs:
                    o.set_up(ctx)
                values = (await ctx.tick().sample(*probes))[2:]
                for i, ready in zip(inputs, values):
                    i.sampled(cycle, ready)
                for o, valid, word in zip(outputs, values[len(inputs):], values[len(inputs) + len(outputs):]):
                    o.sampled(cycle, valid, word)
                if all(s.finished for s in inputs + outputs):
                    end["cycles"] = cycle + 1
                    return
                cycle += 1
                if cycle >= max_cycles:
                    raise DeviceError(f"Run did not finish within {max_cycles} cycles: "
                                      + ", ".join(f"{s.name} moved {s.stats.transfers}" for s in inputs + outputs))

        started = time.perf_counter()
        try:
            run_simulation(dut, [bench], max_cycles=max_cycles + 1, waves=waves, name=name)
        except SimulationTimeout as error:
            raise DeviceError(str(error)) from None
        wall = time.perf_counter() - started
        return TraceResult(outputs={o.name: OutputStream(o.words, np.array(o.cycles, dtype=np.int64)) for o in outputs},
                           ports={s.name: s.stats for s in inputs + outputs}, cycles=end["cycles"], wall_seconds=wall)
