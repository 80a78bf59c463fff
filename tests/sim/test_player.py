"""The file-driven player: long runs on Verilator without Python in the loop."""

import numpy as np
import pytest

from rpaccel.host.driver.codec import codec, format_hex, pack
from rpaccel.rtl.postproc import PostProcessor
from rpaccel.sim.golden.postproc import EDGE_CASES, postprocess_payloads, random_postprocess_payloads
from rpaccel.sim.player import Player, PlayerError, StreamPort, _split_timed, _timed_lines, stream_ports
from rpaccel.sim.streams import port_seed, xorshift_stalls

from stream_fifo import Item, StreamFIFO, random_items

pytestmark = pytest.mark.verilator


def test_stream_ports_are_recognised():
    ports = [("i__payload", "i", 8), ("i__valid", "i", 1), ("i__ready", "o", 1), ("o__valid", "o", 1),
             ("o__ready", "i", 1), ("o__payload", "o", 3), ("mode", "i", 2), ("status", "o", 4)]
    streams, statics = stream_ports(ports)
    assert streams == [StreamPort("i", "i", 8), StreamPort("o", "o", 3)]
    assert statics == {"mode": 2}


def test_fifo_keeps_order_with_nested_payloads():
    items = random_items(np.random.default_rng(2), 5000)
    result = Player(StreamFIFO, 4).run({"i": items}, expect={"o": len(items)}, pause=0.4, seed=9)
    assert result.outputs["o"] == items
    assert result.ports["i"].transfers == result.ports["o"].transfers == 5000
    assert result.cycles > 5000 / 0.6 * 0.9  # the stalls happened


def test_postproc_long_run_is_bit_exact():
    payloads = list(EDGE_CASES) + random_postprocess_payloads(np.random.default_rng(8), 100_000)
    result = Player(PostProcessor).run({"i": payloads}, expect={"o": len(payloads)}, pause=0.3, seed=4)
    assert result.outputs["o"] == postprocess_payloads(payloads)


def test_without_stalls_one_result_per_cycle():
    payloads = random_postprocess_payloads(np.random.default_rng(1), 2000)
    result = Player(PostProcessor).run({"i": payloads}, expect={"o": len(payloads)}, pause=0.0)
    assert result.outputs["o"] == postprocess_payloads(payloads)
    o = result.ports["o"]
    assert o.last_cycle - o.first_cycle == len(payloads) - 1


def test_packed_mode_passes_bits_through():
    items = random_items(np.random.default_rng(3), 300)
    bits = [pack(Item, item) for item in items]
    result = Player(StreamFIFO, 4).run({"i": np.array(bits)}, expect={"o": len(bits)}, pause=0.2, packed=True)
    assert result.outputs["o"] == bits
    with pytest.raises(PlayerError, match=r"^Input 'i', value #0 = 67108864 is not 26 packed bits$"):
        Player(StreamFIFO, 4).run({"i": [1 << 26]}, expect={"o": 1}, packed=True)


def test_words_and_columns_are_packed_at_once():
    items = random_items(np.random.default_rng(5), 400)
    item_codec = codec(Item)
    words = item_codec.pack_values(items)
    player = Player(StreamFIFO, 4)
    result = player.run({"i": words}, expect={"o": len(items)}, pause=0.2, packed=True, words=True)
    assert result.outputs["o"].dtype == np.uint64
    np.testing.assert_array_equal(result.outputs["o"], words)
    empty = player.run({}, expect={"o": 0}, packed=True, words=True, output_cycles=True)
    assert empty.outputs["o"].shape == (0, 1) and empty.output_cycles["o"].shape == (0,)
    columns = item_codec.unpack(words)
    assert player.run({"i": columns}, expect={"o": len(items)}, pause=0.2).outputs["o"] == items
    columns["values"][2, 1] = 64
    with pytest.raises(PlayerError, match=r"^Input 'i', row 2: payload.values\[1\] = 64 does not fit signed\(7\)"):
        player.run({"i": columns}, expect={"o": len(items)})
    with pytest.raises(PlayerError, match=r"^Input 'i', packed word #1 has bits set beyond its 26 bits$"):
        player.run({"i": np.array([[0], [1 << 26]], dtype=np.uint64)}, expect={"o": 2}, packed=True)


def test_timed_lines_carry_decimal_cycles_without_leading_zeros():
    cycles = np.array([0, 7, 10, 99, 100, 123_456_789_012])
    lines = format_hex(np.arange(6, dtype=np.uint64), 12)
    data = _timed_lines(cycles, lines)
    assert data.decode() == "0 000\n7 001\n10 002\n99 003\n100 004\n123456789012 005\n"
    read_cycles, read_lines = _split_timed(data, 3, "Output 'o'")
    assert read_cycles.tolist() == cycles.tolist() and read_lines == lines
    assert _timed_lines(np.zeros(0, dtype=np.int64), "") == b""
    assert _split_timed(b"", 3, "Output 'o'")[0].size == 0
    for bad, error in [(b"5 001\n6 02\n", "line 1 of the run's file is not"),
                       (b"5 001\n6x 002\n", "line 1 of the run's file is not"),
                       (b"001\n", "line 0 of the run's file is not"),
                       (b"5 001\n7 002", "the file of the run ends in the middle of a line")]:
        with pytest.raises(PlayerError, match=f"^Output 'o': {error}"):
            _split_timed(bad, 3, "Output 'o'")


def test_player_errors_name_the_port():
    player = Player(StreamFIFO, 4)
    with pytest.raises(PlayerError, match="no input stream 'x'"):
        player.run({"x": []}, expect={"o": 0})
    with pytest.raises(PlayerError, match="expected count of output stream 'o'"):
        player.run({"i": []}, expect={})
    with pytest.raises(PlayerError, match=r"^Input 'i', row 1: payload.tag = 99 does not fit unsigned\(5\)"):
        player.run({"i": [{"tag": 1, "values": [0, 0, 0]}, {"tag": 99, "values": [0, 0, 0]}]}, expect={"o": 2})
    with pytest.raises(PlayerError, match="did not finish within 200 cycles: i moved 1, o moved 1"):
        player.run({"i": [{"tag": 1, "values": [0, 0, 0]}]}, expect={"o": 2}, max_cycles=200)


def test_inputs_are_offered_from_cycle_0():
    items = random_items(np.random.default_rng(6), 20)
    result = Player(StreamFIFO, 4).run({"i": items}, expect={"o": len(items)})
    assert result.ports["i"].first_cycle == 0 and result.ports["i"].last_cycle == len(items) - 1
    assert result.output_cycles == {}  # not asked for


def test_timed_files_hold_inputs_and_stamp_outputs():
    items = random_items(np.random.default_rng(7), 6)
    not_before = [0, None, 300, None, None, 301]  # the last is past when its turn comes: right after the fifth
    result = Player(StreamFIFO, 4).run({"i": items}, expect={"o": len(items)}, not_before={"i": not_before},
                                       output_cycles=True)
    assert result.outputs["o"] == items
    latency = int(result.output_cycles["o"][0])  # the FIFO's, from the first word (taken in cycle 0)
    assert result.output_cycles["o"].tolist() == [c + latency for c in (0, 1, 300, 301, 302, 303)]


def test_timed_runs_reject_bad_cycles_and_statics():
    player = Player(StreamFIFO, 4)
    item = {"tag": 1, "values": [0, 0, 0]}
    with pytest.raises(PlayerError, match="no input stream 'x'"):
        player.run({"i": [item]}, expect={"o": 1}, not_before={"x": [0]})
    with pytest.raises(PlayerError, match=r"^Trace port 'i', transfer #1: not-before cycle 3 comes before cycle 5"):
        player.run({"i": [item, item]}, expect={"o": 2}, not_before={"i": [5, 3]})
    with pytest.raises(PlayerError, match=r"^Trace port 'i': 1 not-before cycles for 2 words$"):
        player.run({"i": [item, item]}, expect={"o": 2}, not_before={"i": [5]})


def test_stall_generator_has_a_python_twin():
    # The testbench's xorshift, stepped once per cycle from cycle 0: ready on an output whose stall pattern is
    # known in Python accepts exactly on the cycles the twin says.
    pause, seed = 0.5, 3
    stalls = xorshift_stalls(pause, port_seed(seed, "o"))
    ready = [not next(stalls) for _ in range(400)]
    items = random_items(np.random.default_rng(8), 100)
    result = Player(StreamFIFO, 4).run({"i": items}, expect={"o": len(items)}, pause={"o": pause}, seed=seed,
                                       output_cycles=True)
    cycles = result.output_cycles["o"]
    assert all(ready[c] for c in cycles)
    assert cycles.tolist() == [c for c in range(int(cycles[0]), int(cycles[-1]) + 1) if ready[c]]
