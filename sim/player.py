"""Long simulations without Python in the loop: stimulus and responses streamed through files by a Verilog
testbench that runs beside the design inside Verilator.

:class:`Player` wraps a component's Verilog in a generated testbench (``player``) with its own clock
(Verilator ``--timing``). For every input stream port the testbench reads payloads from a file, one per
transfer, idling randomly; for every output stream port it applies random back-pressure and writes every
payload it accepts to a file. Random stalls come from a per-port xorshift generator seeded by the caller, so a
run is reproducible (:func:`~rpaccel.sim.streams.xorshift_stalls` is its Python twin). Non-stream inputs are held
at values given per run. When every output port has delivered its expected count the testbench raises ``done``;
the cocotb bench :mod:`rpaccel.sim.benches.player` wakes up once, at that point, and reports. Python is not woken
during the run.

Runs are timed as :mod:`rpaccel.host.driver.device` says: reset lasts four clock edges, cycle 0 is the first
cycle out of reset (inputs may be offered in it), and a transfer is counted in the cycle whose closing edge sees
``valid`` and ``ready``. A port's file is switched to timed lines at run time (``+timed_<port>=1``), so one
Verilator build serves timed and untimed runs and an untimed port pays for nothing:

* an untimed line is the payload in hexadecimal (``1f3a``);
* a timed input line is ``<not-before cycle, decimal> <payload, hex>`` (``5000 1f3a``): the word is not offered
  before that cycle, and never before the word of the line above has been taken (a cycle already past means "as
  soon as possible"), and the cycles of a file never decrease;
* a timed output line is ``<cycle of the transfer, decimal> <payload, hex>``.

Payloads are packed and unpacked by the driver layer's codec (:mod:`rpaccel.host.driver.codec`), its hex lines
read and written with numpy over the whole file. Values go in as the payload shape asks (``int``, ``dict``,
``list``), as columns, or already packed (``packed=True``: ``(n, limbs)`` uint64 words or ints); the fastest
form both ways, for runs of millions of transfers, is words (``packed=True, words=True``).

The caller compares the outputs with its golden model::

    player = Player(PostProcessor)
    result = player.run({"i": payloads}, expect={"o": len(payloads)}, pause=0.3, seed=1)
    assert result.outputs["o"] == golden(payloads)

:class:`rpaccel.sim.device.PlayerDevice` runs :class:`~rpaccel.host.driver.device.TimedTrace` s through it.
"""

import os
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from amaranth.hdl import unsigned

from ..host.driver.codec import CodecError, codec, format_hex, from_ints, parse_hex, to_ints
from ..host.driver.device import DeviceError, PortStats, TraceError, not_before_array
from .cache import cache_entry, digest, mark_complete
from .streams import port_seed, stall_threshold
from .verilator import (
    BUILD_ARGS,
    _make_flags,
    _make_overrides,
    ensure_verilator,
    run_cocotb,
    verilator_version,
    waves_enabled,
)
from .verilog import VerilogArtifact, generate_verilog

__all__ = ["Player", "PlayerError", "PlayerResult", "PortStats", "StreamPort", "stream_ports"]

#: Extra Verilator arguments for the self-clocked testbench (g++ 12 needs -fcoroutines for C++20 coroutines).
TIMING_ARGS = ("--timing", "-CFLAGS", "-std=c++20 -fcoroutines")


class PlayerError(DeviceError):
    """A player run went wrong (timeout, a missing port, bad stimulus); the message says which port."""


@dataclass(frozen=True)
class StreamPort:
    """A stream port of the design: ``name`` with ``name__valid``, ``name__ready`` and ``name__payload``."""

    name: str
    direction: str  # "i": the design consumes it; "o": the design produces it
    width: int


def stream_ports(ports):
    """Split a Verilog port list into stream ports and plain (static) inputs.

    Parameters
    ----------
    ports : sequence of (str, str, int)
        ``(name, direction, width)``, as in :attr:`~rpaccel.sim.verilog.VerilogArtifact.ports`.

    Returns
    -------
    (list of StreamPort, dict)
        The stream ports, and ``{name: width}`` of the inputs that belong to no stream.
    """
    by_name = {name: (direction, width) for name, direction, width in ports}
    streams, members = [], set()
    for name, (direction, _) in by_name.items():
        if not name.endswith("__valid"):
            continue
        base = name[: -len("__valid")]
        if f"{base}__ready" in by_name:
            payload = by_name.get(f"{base}__payload", ("", 0))
            streams.append(StreamPort(base, direction, payload[1]))
            members |= {f"{base}__valid", f"{base}__ready", f"{base}__payload"}
    statics = {name: width for name, (direction, width) in by_name.items()
               if direction == "i" and name not in members}
    return streams, statics


def testbench_verilog(dut_top, streams, statics):
    """The Verilog text of the ``player`` testbench around module ``dut_top``."""
    lines = [
        "`timescale 1ns/1ps",
        "// Generated by rpaccel.sim.player: file-driven streams with not-before cycles and seeded random stalls.",
        "module player;",
        "  reg clk = 0;",
        "  reg rst = 1;",
        "  reg [2:0] reset_left = 3'd4;",
        "  always #5 clk = ~clk;",
        "  reg done = 0;",
        "  reg timeout = 0;",
        "  reg [63:0] cycle = 0;",
        "  reg [63:0] next_cycle = 0;",
        "  reg [63:0] max_cycles = 64'd100000000;",
        "  reg [8*1024-1:0] path;",
        "  integer summary;",
        "  integer scanned;",
    ]
    connections = [".clk(clk)", ".rst(rst)"]
    for name, width in statics.items():
        lines.append(f"  reg [{width - 1}:0] s_{name} = 0;")
        connections.append(f".{name}(s_{name})")
    for s in streams:
        p, w = s.name, max(s.width, 1)
        common = [f"  integer {p}_fd = 0;", f"  reg [63:0] {p}_count = 0;", f"  reg [63:0] {p}_done = 0;",
                  f"  reg [63:0] {p}_first = 0;", f"  reg [63:0] {p}_last = 0;",
                  f"  reg [31:0] {p}_rng = 32'h1;", f"  reg [31:0] {p}_stall = 0;", f"  reg {p}_timed = 0;"]
        lines += common
        if s.direction == "i":
            lines += [f"  reg {p}_valid = 0;", f"  wire {p}_ready;", f"  reg [{w - 1}:0] {p}_payload = 0;",
                      f"  reg [{w - 1}:0] {p}_next = 0;", f"  reg [63:0] {p}_not_before = 0;",
                      f"  reg {p}_have = 0;"]
        else:
            lines += [f"  wire {p}_valid;", f"  reg {p}_ready = 0;", f"  wire [{w - 1}:0] {p}_payload;"]
        connections += [f".{p}__valid({p}_valid)", f".{p}__ready({p}_ready)"]
        if s.width:
            connections.append(f".{p}__payload({p}_payload)")
    lines.append(f"  {dut_top} dut({', '.join(connections)});")

    # Set-up: plusargs name the files, counts, stall thresholds, seeds and which files carry cycles.
    lines += ["  initial begin",
              '    if ($value$plusargs("max_cycles=%d", max_cycles)) ;']
    for name in statics:
        lines.append(f'    if ($value$plusargs("static_{name}=%h", s_{name})) ;')
    for s in streams:
        p = s.name
        mode = '"r"' if s.direction == "i" else '"w"'
        lines += [
            f'    if ($value$plusargs("file_{p}=%s", path)) begin',
            f"      {p}_fd = $fopen(path, {mode});",
            f'      if ({p}_fd == 0) $fatal(1, "player: cannot open the file of port {p}");',
            "    end",
            f'    if ($value$plusargs("count_{p}=%d", {p}_count)) ;',
            f'    if ($value$plusargs("stall_{p}=%d", {p}_stall)) ;',
            f'    if ($value$plusargs("seed_{p}=%d", {p}_rng)) ;',
            f'    if ($value$plusargs("timed_{p}=%d", {p}_timed)) ;',
            f"    if ({p}_rng == 0) {p}_rng = 32'h1;",
        ]
    lines += ["  end", ""]

    # Every clock edge: reset for four edges; from the end of reset, count the cycle the edge ends and record its
    # transfers; from the last reset edge on, advance each port's stall generator and set up the next cycle.
    lines += ["  always @(posedge clk) if (!done) begin",
              "    if (reset_left != 0) reset_left <= reset_left - 1;",
              "    rst <= reset_left > 1;",
              "    if (!rst) begin",
              "      cycle <= cycle + 1;"]
    for s in streams:
        p = s.name
        lines += [f"      if ({p}_valid && {p}_ready) begin",
                  f"        if ({p}_done == 0) {p}_first <= cycle;",
                  f"        {p}_last <= cycle;",
                  f"        {p}_done = {p}_done + 1;"]
        if s.direction == "i":
            lines.append(f"        {p}_have = 0;")
        else:
            payload = f"{p}_payload" if s.width else "1'b0"
            lines += [f'        if ({p}_timed) $fwrite({p}_fd, "%0d %h\\n", cycle, {payload});']
            if s.width:
                lines.append(f'        else $fwrite({p}_fd, "%h\\n", {p}_payload);')
        lines.append("      end")
    outputs = [s.name for s in streams if s.direction == "o"]
    inputs = [s.name for s in streams if s.direction == "i"]
    finished = " && ".join([f"{p}_done >= {p}_count" for p in outputs + inputs] or ["1"])
    lines += [f"      if ({finished}) done <= 1;",
              "      if (cycle + 1 >= max_cycles) begin timeout <= 1; done <= 1; end",
              "    end",
              "    if (reset_left <= 1) begin",
              "      next_cycle = rst ? 0 : cycle + 1;"]
    for s in streams:
        p = s.name
        lines.append(f"      {p}_rng = {p}_rng ^ ({p}_rng << 13); {p}_rng = {p}_rng ^ ({p}_rng >> 17); "
                     f"{p}_rng = {p}_rng ^ ({p}_rng << 5);")
        if s.direction == "i":
            # Valid and payload may change only when no transfer is pending; a word is not offered before its
            # not-before cycle (0 on a file without cycles).
            lines += [
                f"      if (!{p}_valid || {p}_ready) begin",
                f"        if (!{p}_have && {p}_done < {p}_count) begin",
                f"          if ({p}_timed) scanned = $fscanf({p}_fd, \"%d %h\\n\", {p}_not_before, {p}_next) - 1;",
                f'          else scanned = $fscanf({p}_fd, "%h\\n", {p}_next);',
                f'          if (scanned != 1) $fatal(1, "player: the file of port {p} ended early");',
                f"          {p}_have = 1;",
                "        end",
                f"        if ({p}_have && {p}_rng[15:0] >= {p}_stall[15:0] && next_cycle >= {p}_not_before) begin",
                f"          {p}_valid <= 1;",
                f"          {p}_payload <= {p}_next;",
                "        end else",
                f"          {p}_valid <= 0;",
                "      end",
            ]
        else:
            lines.append(f"      {p}_ready <= {p}_rng[15:0] >= {p}_stall[15:0];")
    lines += [
        "    end",
        "  end",
        "",
        "  always @(posedge done) begin",
        '    if ($value$plusargs("summary=%s", path)) begin',
        '      summary = $fopen(path, "w");',
        '      $fwrite(summary, "cycles %0d\\n", cycle);',
        '      $fwrite(summary, "timeout %0d\\n", timeout);',
    ]
    for s in streams:
        p = s.name
        lines.append(f'      $fwrite(summary, "port {p} %0d %0d %0d\\n", {p}_done, {p}_first, {p}_last);')
    lines += ["      $fclose(summary);", "    end"]
    for s in streams:
        lines.append(f"    if ({s.name}_fd != 0) $fclose({s.name}_fd);")
    lines += ['    if ($test$plusargs("finish")) $finish;', "  end", "endmodule", ""]
    return "\n".join(lines)


#: Verilator arguments of a direct (cocotb-free) build: a stand-alone binary with its own main loop. Every
#: variable starts at zero (``--x-initial 0``), as the all-zero memory contents Amaranth writes say.
DIRECT_ARGS = ("--binary", "-O3", "--x-assign", "fast", "--x-initial", "0", "--noassert",
               "-CFLAGS", "-std=c++20 -fcoroutines -O2")

_ZERO_WORD = re.compile(r"^\s*(\\\S+ |[A-Za-z_][\w$]*)\[\d+\] = \d+'[bdh]0+;$")


def strip_zero_memory_init(text):
    """Drop the ``initial`` blocks of a Verilog text that only set memory words to zero.

    Amaranth writes the contents of every memory, zeros included, one statement per word; Verilator turns each
    into C++ (12,288 statements for a 12,288-word memory), which dominates the compile time of a design with
    large memories. With ``--x-initial 0`` every variable starts at zero anyway, so the blocks change nothing.
    """
    out, block = [], None
    for line in text.splitlines(keepends=True):
        if block is None:
            if line.strip() == "initial begin":
                block = [line]
            else:
                out.append(line)
            continue
        block.append(line)
        if line.strip() == "end":
            body = block[1:-1]
            if not (body and all(_ZERO_WORD.match(statement.rstrip("\n")) for statement in body)):
                out.extend(block)
            block = None
    out.extend(block or [])
    return "".join(out)


def build_direct(artifact):
    """Build ``artifact`` (a self-clocked testbench) as a stand-alone Verilator binary, cached like
    :func:`rpaccel.sim.verilator.run_cocotb` builds; return ``(path of the binary, build seconds)``."""
    exe = ensure_verilator()
    args = [*BUILD_ARGS, *DIRECT_ARGS, "--top-module", artifact.top]
    text = strip_zero_memory_init(artifact.path.read_text())
    # The Verilog text, not the sources it came from: a change that leaves the design's Verilog alone (an experiment,
    # the CLI) costs a regeneration, not a build.
    key = digest(artifact.top, text, args, verilator_version(), os.environ.get("CXX", ""))
    started = time.perf_counter()
    with cache_entry("verilator-direct", key) as (folder, complete):
        binary = folder / f"V{artifact.top}"
        if not complete:
            log = folder / "build.log"
            source = folder / artifact.path.name
            source.write_text(text)
            with _make_flags(_make_overrides()), open(log, "w") as out:
                build = subprocess.run([str(exe), *args, "-Mdir", str(folder), "--build-jobs", "2",
                                        str(source)], cwd=folder, stdout=out, stderr=subprocess.STDOUT)
            if build.returncode != 0 or not binary.exists():
                raise PlayerError(f"Verilator build of {artifact.path} failed; {log} ends with:\n"
                                  + log.read_text()[-4000:])
            mark_complete(folder)
            return binary, time.perf_counter() - started
    return binary, 0.0


@dataclass
class PlayerResult:
    """Outcome of :meth:`Player.run`.

    Attributes
    ----------
    outputs : dict
        ``{port: values}`` for every output stream port: a list of values unpacked through the payload shape, a
        list of packed ints (``packed=True``), or an ``(n, limbs)`` uint64 array of packed words
        (``words=True``).
    cycles : int
        Cycles from the end of reset to ``done``.
    ports : dict
        :class:`PortStats` per stream port.
    wall_seconds : float
        Wall time of the simulation (Verilator build excluded).
    build_seconds : float
        Wall time of the Verilator build (0 when cached).
    cpu_seconds : float
        Processor time of the simulation (direct runs only; 0 under cocotb): on a shared machine wall time
        also counts the time other processes held the processor.
    output_cycles : dict
        ``{port: numpy int64 array}``, the cycle of every output transfer (runs with ``output_cycles=True``).
    """

    outputs: dict
    cycles: int
    ports: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    build_seconds: float = 0.0
    cpu_seconds: float = 0.0
    output_cycles: dict = field(default_factory=dict)

    @property
    def cycles_per_second(self):
        """Simulated cycles per wall-clock second."""
        return self.cycles / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def cycles_per_cpu_second(self):
        """Simulated cycles per second of processor time (0 when not measured)."""
        return self.cycles / self.cpu_seconds if self.cpu_seconds else 0.0


class Player:
    """Run a component on Verilator with file-driven stream ports (see the module documentation).

    Parameters
    ----------
    factory : callable
        Builds the component (e.g. its class); called with ``*args, **kwargs`` at most once per configuration
        (the Verilog is cached).
    *args, **kwargs
        Arguments of ``factory``.
    shapes : dict, optional
        ``{port: payload shape}`` used to pack and unpack values; ports not given take ``unsigned(width)``
        (values are then plain integers). By default the shapes are read from the component's signature.
    """

    def __init__(self, factory, *args, shapes=None, **kwargs):
        self.dut = generate_verilog(factory, *args, **kwargs)
        self.streams, self.statics = stream_ports(self.dut.ports)
        self._shapes = shapes if shapes is not None else _payload_shapes(factory, args, kwargs)
        self._artifact = self._testbench()

    @property
    def inputs(self):
        """Names of the input stream ports."""
        return [s.name for s in self.streams if s.direction == "i"]

    @property
    def outputs(self):
        """Names of the output stream ports."""
        return [s.name for s in self.streams if s.direction == "o"]

    def _testbench(self):
        text = testbench_verilog(self.dut.top, self.streams, self.statics)
        key = digest(self.dut.key, text)
        folder = self.dut.path.parent
        path = folder / f"player_{key}.v"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(self.dut.path.read_text() + "\n" + text)
            tmp.replace(path)
        return VerilogArtifact(path=path, top="player", key=key, ports=())

    def _shape(self, name, width):
        return self._shapes.get(name, unsigned(width))

    def run(self, inputs, *, expect, statics=None, pause=0.0, seed=1, max_cycles=100_000_000, waves=None,
            name=None, packed=False, words=False, direct=False, not_before=None, output_cycles=False):
        """Play ``inputs`` into the design and collect ``expect`` values from each output port.

        Parameters
        ----------
        inputs : dict
            ``{input port: values}``: an iterable of values as the payload shape asks (``int``, ``dict``, ``list``
            nested as deep as the layout; see :meth:`~rpaccel.host.driver.codec.Codec.pack_value`), or columns
            (a mapping or numpy array, packed at once by :meth:`~rpaccel.host.driver.codec.Codec.pack`).
        expect : dict
            ``{output port: number of values}``; the run ends when every output port has delivered this many.
        statics : dict, optional
            ``{input name: int}`` held on the non-stream inputs during the run.
        pause : float or dict
            Probability of an idle cycle on each input and of a back-pressured cycle on each output, or
            ``{port: probability}``.
        seed : int
            Seed of the stall generators (each port gets its own stream, see
            :func:`~rpaccel.sim.streams.xorshift_stalls`).
        max_cycles : int
            Fail with :class:`PlayerError` if the run has not finished after this many cycles.
        waves : bool, optional
            Dump a waveform (see :func:`rpaccel.sim.verilator.run_cocotb`).
        name : str, optional
            Name of the run (for the waveform file).
        packed : bool
            Inputs and statics are already packed bits: per input port ``(n, limbs)`` uint64 words (as
            :mod:`rpaccel.host.driver.codec` packs them), Python ints or a numpy integer array; outputs are
            returned as packed ints. Nothing is packed or unpacked value by value, for runs with millions of
            transfers.
        words : bool
            Return every output as ``(n, limbs)`` uint64 words (whatever ``packed`` says): the fastest form for
            long runs, ready for :meth:`Codec.unpack <rpaccel.host.driver.codec.Codec.unpack>`.
        direct : bool
            Run the testbench as a stand-alone Verilator binary (``verilator --binary``, see
            :func:`build_direct`) instead of under cocotb. Same testbench, same files, same results; no VPI,
            so Verilator optimises the whole design (cocotb's runner makes every signal public), which is
            several times faster on large designs. Waveforms need cocotb: with ``waves`` the run uses it.
        not_before : dict, optional
            ``{input port: cycles}``: the cycle before which each value is not offered, as a sequence of int
            (``None`` for a value offered as soon as the one before it has been taken) or an integer array
            (:data:`~rpaccel.host.driver.device.NO_CYCLE` for that); see :mod:`rpaccel.host.driver.device`.
        output_cycles : bool
            Record the cycle of every output transfer in :attr:`PlayerResult.output_cycles`.

        Returns
        -------
        PlayerResult
        """
        statics = dict(statics or {})
        not_before = dict(not_before or {})
        unknown = sorted((set(inputs) | set(not_before)) - set(self.inputs))
        if unknown:
            raise PlayerError(f"Design has no input stream {unknown[0]!r} (inputs: {', '.join(self.inputs)})")
        missing = sorted(set(self.outputs) - set(expect))
        if missing:
            raise PlayerError(f"Give the expected count of output stream {missing[0]!r}")
        bad_static = sorted(set(statics) - set(self.statics))
        if bad_static:
            raise PlayerError(f"Design has no static input {bad_static[0]!r} "
                              f"(static inputs: {', '.join(self.statics) or 'none'})")
        pauses = pause if isinstance(pause, dict) else {s.name: pause for s in self.streams}
        for port, p in pauses.items():
            if not 0.0 <= p < 1.0:
                raise PlayerError(f"Pause probability of port {port!r} must be in [0, 1), not {p!r}")

        work = Path(tempfile.mkdtemp(prefix="rpaccel-player-"))
        plusargs = [f"+max_cycles={max_cycles}", f"+summary={work / 'summary.txt'}"]
        for s in self.streams:
            file = work / f"{s.name}.hex"
            timed = output_cycles
            if s.direction == "i":
                timed = s.name in not_before
                count = self._write_input(file, s, inputs.get(s.name, ()), packed, not_before.get(s.name))
            else:
                count = int(expect[s.name])
                if count < 0:
                    raise PlayerError(f"Expected count of {s.name!r} must not be negative, not {count}")
            plusargs += [f"+file_{s.name}={file}", f"+count_{s.name}={count}",
                         f"+stall_{s.name}={stall_threshold(pauses.get(s.name, 0.0))}",
                         f"+seed_{s.name}={port_seed(seed, s.name)}"]
            if timed:
                plusargs.append(f"+timed_{s.name}=1")
        for static, value in statics.items():
            plusargs.append(f"+static_{static}={self._static_bits(static, value, packed):x}")

        started = time.perf_counter()
        if direct and not waves_enabled(waves):
            binary, build_seconds = build_direct(self._artifact)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            run = subprocess.run([str(binary), *plusargs, "+finish"], cwd=work, capture_output=True, text=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if run.returncode != 0:
                raise PlayerError(f"The testbench binary {binary} failed (exit status {run.returncode}):\n"
                                  + (run.stdout + run.stderr)[-4000:])
        else:
            result = run_cocotb(self._artifact, "rpaccel.sim.benches.player", build_args=TIMING_ARGS,
                                plusargs=plusargs, waves=waves, name=name or f"player-{self.dut.key[:8]}",
                                quiet=True)
            wall = result.report.get("wall_seconds", time.perf_counter() - started)
            build_seconds = result.build_seconds
            cpu = 0.0
        summary = _read_summary(work / "summary.txt")
        if summary.get("timeout"):
            raise PlayerError(f"Run did not finish within {max_cycles} cycles: "
                              + ", ".join(f"{p} moved {st.transfers}" for p, st in summary["ports"].items()))
        outputs, cycles = {}, {}
        for s in self.streams:
            if s.direction == "i":
                continue
            found, stamps = _read_output(work / f"{s.name}.hex", s, summary["ports"][s.name].transfers,
                                         output_cycles)
            if output_cycles:
                cycles[s.name] = stamps
            if words:
                outputs[s.name] = found
            elif packed:
                outputs[s.name] = to_ints(found)
            else:
                outputs[s.name] = codec(self._shape(s.name, s.width)).unpack_values(found)
        for file in work.iterdir():
            file.unlink()
        work.rmdir()
        return PlayerResult(outputs=outputs, cycles=summary["cycles"], ports=summary["ports"], wall_seconds=wall,
                            build_seconds=build_seconds, cpu_seconds=cpu, output_cycles=cycles)

    def _static_bits(self, name, value, packed):
        width = self.statics[name]
        if packed:
            if not 0 <= int(value) < 1 << width:
                raise PlayerError(f"Static input {name!r}: {value} is not {width} packed bits")
            return int(value)
        try:
            return codec(self._shape(name, width)).pack_value(value)
        except CodecError as error:
            raise PlayerError(f"Static input {name!r}: {error}") from None

    def _write_input(self, file, port, values, packed, not_before):
        """Write the input file of ``port`` (a line per word, timed if ``not_before`` is given); return the number
        of words."""
        try:
            words = self._input_words(port, values, packed)
            lines = format_hex(words, port.width)
        except CodecError as error:
            raise PlayerError(_port_error(f"Input {port.name!r}", error)) from None
        if not_before is not None:
            try:
                cycles = not_before_array(port.name, not_before, len(words))
            except TraceError as error:
                raise PlayerError(str(error)) from None
            # A word without a cycle of its own carries the one before it: the file's cycles never decrease.
            cycles = np.maximum.accumulate(np.maximum(cycles, 0))
            file.write_bytes(_timed_lines(cycles, lines))
        else:
            file.write_text(lines)
        return len(words)

    def _input_words(self, port, values, packed):
        # The ``(n, limbs)`` words of an input port's values.
        if packed:
            if isinstance(values, np.ndarray) and values.ndim == 2:
                return values  # words, checked by format_hex
            return from_ints(values, port.width)
        port_codec = codec(self._shape(port.name, port.width))
        if isinstance(values, Mapping) or (isinstance(values, np.ndarray) and values.dtype != object):
            return port_codec.pack(values)
        return port_codec.pack_values(values)


def _port_error(where, error):
    # ``Input 'i', value #3 = ...`` from a codec error ``Value #3 = ...``: one line naming the port and the word.
    text = str(error)
    return f"{where}, {text[:1].lower()}{text[1:]}"


def _timed_lines(cycles, lines):
    """``<cycle> <hex>`` lines, as bytes, from non-decreasing, non-negative ``cycles`` (written in decimal without
    leading zeros) and the hex ``lines`` of :func:`~rpaccel.host.driver.codec.format_hex`."""
    count = len(cycles)
    if not count:
        return b""
    digits = len(str(int(cycles[-1])))
    table = np.empty((count, digits + 1 + len(lines) // count), dtype=np.uint8)
    rest = cycles.astype(np.int64)
    for column in range(digits - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        table[:, column] = digit + ord("0")
    table[:, digits] = ord(" ")
    table[:, digits + 1:] = np.frombuffer(lines.encode("ascii"), dtype=np.uint8).reshape(count, -1)
    # The cycles never decrease, so the lines of k-digit cycles are one block: its last columns without the zeros.
    bounds = [0, *np.searchsorted(cycles, 10 ** np.arange(1, digits)).tolist(), count]
    return b"".join(table[first:last, digits - length:].tobytes()
                    for length, (first, last) in enumerate(pairwise(bounds), start=1))


def _read_output(file, port, transfers, timed):
    """The ``(n, limbs)`` words of an output file, and its cycles (``timed``) or ``None``."""
    where = f"Output {port.name!r}"
    cycles = None
    if timed:
        cycles, text = _split_timed(file.read_bytes(), max(1, -(-port.width // 4)), where)
    elif port.width:
        text = file.read_bytes().decode("latin-1")  # a byte that is no hex digit is the codec's to name
    else:
        # An untimed port without a payload writes no lines: its words are its transfers, all zero.
        text = "0\n" * transfers
    try:
        return parse_hex(text, port.width), cycles
    except CodecError as error:
        raise PlayerError(_port_error(where, error)) from None


def _split_timed(data, digits, where):
    """The cycles and the hex lines of the ``<cycle> <hex>`` lines of ``data`` (bytes, hex words of ``digits``
    digits as the Verilog ``%h`` writes them)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size and raw[-1] != ord("\n"):
        raise PlayerError(f"{where}: the file of the run ends in the middle of a line")
    ends = np.flatnonzero(raw == ord("\n"))
    sizes = np.diff(ends, prepend=-1)
    # The cycles of a port increase, so the lines of k-digit cycles are one block of equal lines.
    bounds = [*np.flatnonzero(np.diff(sizes, prepend=0)).tolist(), ends.size]
    cycles, hexes = [np.zeros(0, dtype=np.int64)], [np.zeros((0, digits + 1), dtype=np.uint8)]
    for first, last in pairwise(bounds):
        size = int(sizes[first])
        lines = raw[ends[first] + 1 - size:ends[last - 1] + 1].reshape(last - first, size)
        length = size - digits - 2  # the cycle's decimal digits
        numbers = lines[:, :max(length, 0)].astype(np.int64) - ord("0")
        bad = ((numbers < 0) | (numbers > 9)).any(axis=1) | (lines[:, max(length, 0)] != ord(" "))
        if length < 1 or bad.any():
            line = first + (int(np.flatnonzero(bad)[0]) if length >= 1 else 0)
            raise PlayerError(f"{where}: line {line} of the run's file is not '<cycle> <{digits} hex digits>'")
        cycles.append(numbers @ 10 ** np.arange(length - 1, -1, -1, dtype=np.int64))
        hexes.append(lines[:, length + 1:])
    return np.concatenate(cycles), np.concatenate(hexes).tobytes().decode("latin-1")


def _read_summary(path):
    if not path.exists():
        raise PlayerError("The testbench wrote no summary (the simulation did not reach 'done')")
    summary = {"ports": {}}
    for line in path.read_text().splitlines():
        words = line.split()
        if words[0] == "port":
            summary["ports"][words[1]] = PortStats(*(int(w) for w in words[2:5]))
        else:
            summary[words[0]] = int(words[1])
    return summary


def _payload_shapes(factory, args, kwargs):
    # Constructing the component (not elaborating it) gives the exact payload layouts of its signature.
    component = factory(*args, **kwargs)
    component._MustUse__silence = True  # only inspected, never elaborated
    shapes = {}
    for path, member, _value in component.signature.flatten(component):
        name = "__".join(str(part) for part in path)
        shapes[name.removesuffix("__payload")] = member.shape
    return shapes
