"""Shared pytest setup: the ``--waves`` option and a summary of the cocotb runs on Verilator."""

import os

import pytest

from rpaccel.threads import limit_blas_threads


def pytest_addoption(parser):
    parser.addoption("--waves", action="store_true",
                     help="dump waveforms of every simulation (VCD for the Amaranth simulator, FST for "
                          "Verilator) into $RPACCEL_WAVES_DIR (default ./waves)")


def pytest_configure(config):
    limit_blas_threads()    # two workers on two cores: see rpaccel.threads
    if config.getoption("--waves"):
        os.environ["RPACCEL_WAVES"] = "1"
    config._rpaccel_cocotb = []


@pytest.fixture
def cocotb_record(request):
    """Record a cocotb run for the end-of-session summary.

    Takes a :class:`~rpaccel.sim.verilator.CocotbResult` or a scoreboard report (with ``cocotb_tests``).
    """

    def record(result, what):
        if isinstance(result, dict):
            tests = [(t["name"], t["passed"], t["sim_time_ns"]) for t in result["cocotb_tests"]]
        else:
            tests = [(t.name, t.passed, t.sim_time_ns) for t in result.tests]
        request.config._rpaccel_cocotb.append((request.node.nodeid, what, tests))
        return result

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    runs = getattr(config, "_rpaccel_cocotb", [])
    if not runs:
        return
    from rpaccel.sim.verilator import verilator_version

    terminalreporter.section(f"cocotb benches on {verilator_version()}")
    for nodeid, what, tests in runs:
        tests = ", ".join(f"{name} {'PASS' if passed else 'FAIL'} ({sim_ns / 1000:,.0f} us simulated)"
                          for name, passed, sim_ns in tests)
        terminalreporter.write_line(f"{nodeid}: {what}: {tests}")


def pytest_collection_modifyitems(config, items):
    # The fast tier (pytest -m "not slow") leaves out every run of Verilator and of the synthesis tools.
    for item in items:
        if item.get_closest_marker("verilator") or item.get_closest_marker("synth"):
            item.add_marker(pytest.mark.slow)
