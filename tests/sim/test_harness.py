"""The simulation harness: Verilog cache, Verilator build cache, failures and waveform dumps."""

import pytest

from rpaccel.sim import verilog as verilog_module
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation
from rpaccel.sim.verilator import CocotbFailure, ensure_verilator, run_cocotb
from rpaccel.sim.verilog import generate_verilog

from stream_fifo import StreamFIFO

elaborations = []


def counting_fifo(depth):
    elaborations.append(depth)
    return StreamFIFO(depth)


def test_verilog_is_cached_by_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_CACHE_DIR", str(tmp_path))
    first = generate_verilog(counting_fifo, 4)
    again = generate_verilog(counting_fifo, 4)
    other = generate_verilog(counting_fifo, 8)
    assert elaborations == [4, 8]
    assert first.path == again.path and first.key != other.key
    assert "module top" in first.path.read_text()
    assert ("i__payload", "i", 26) in first.ports and ("o__ready", "i", 1) in first.ports


def test_verilog_cache_follows_rtl_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_CACHE_DIR", str(tmp_path))
    first = generate_verilog(counting_fifo, 2)
    monkeypatch.setattr(verilog_module, "source_digest", lambda *paths: "edited")
    assert generate_verilog(counting_fifo, 2).key != first.key


def test_verilator_is_found_without_path_editing():
    exe = ensure_verilator()
    assert exe.name == "verilator" and exe.is_file()


@pytest.mark.verilator
def test_a_bench_that_cannot_import_fails_loudly():
    with pytest.raises(CocotbFailure, match="no test ran"):
        run_cocotb(generate_verilog(StreamFIFO, 4), "no_such_bench_module", quiet=True)


@pytest.mark.verilator
def test_waveforms_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_WAVES_DIR", str(tmp_path))
    result = run_cocotb(generate_verilog(StreamFIFO, 4), "bench_fifo", args={"seed": 1, "count": 20, "pause": 0.2},
                        waves=True, name="fifo", quiet=True)
    assert result.waves in (tmp_path / "fifo.fst", tmp_path / "fifo.vcd")
    assert result.waves.stat().st_size > 0

    dut = StreamFIFO()

    async def send(ctx):
        await StreamSource(dut.i).send(ctx, [{"tag": 1, "values": [1, 2, 3]}])

    async def receive(ctx):
        await StreamSink(dut.o).receive(ctx, 1)

    run_simulation(dut, [send, receive], waves=True, name="fifo-amaranth")
    assert "payload" in (tmp_path / "fifo-amaranth.vcd").read_text()
