"""Timed traces: inputs held until their not-before cycles, outputs stamped with the cycle they left the design,
on the Verilator Player and on the Amaranth simulator, cycle for cycle the same."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.host.driver.codec import pack
from rpaccel.host.driver.device import NO_CYCLE, DeviceError, Port, TimedTrace, TraceError
from rpaccel.sim.device import PlayerDevice, SimulatorDevice

from stream_fifo import Item, StreamFIFO, random_items

pytestmark = pytest.mark.verilator

WIDTH = 16


class Delay(wiring.Component):
    """A ``latency``-stage pipeline adding the held input ``offset`` (signed) to every word, modulo 2**16: a word
    taken in cycle c leaves in cycle c + ``latency`` when the output is not back-pressured; the whole pipeline
    stalls when it is."""

    i: In(stream.Signature(unsigned(WIDTH)))
    o: Out(stream.Signature(unsigned(WIDTH)))
    offset: In(signed(WIDTH))

    def __init__(self, latency):
        if not isinstance(latency, int) or latency < 1:
            raise ValueError(f"Latency must be a positive integer, not {latency!r}")
        self.latency = latency
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        valid = [Signal(name=f"valid{k}") for k in range(self.latency)]
        data = [Signal(WIDTH, name=f"data{k}") for k in range(self.latency)]
        advance = ~self.o.valid | self.o.ready
        m.d.comb += [self.i.ready.eq(advance), self.o.valid.eq(valid[-1]), self.o.payload.eq(data[-1])]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), data[0].eq(self.i.payload + self.offset)]
            for k in range(1, self.latency):
                m.d.sync += [valid[k].eq(valid[k - 1]), data[k].eq(data[k - 1])]
        return m


LATENCY = 3


@pytest.fixture(scope="module")
def player():
    return PlayerDevice(Delay, LATENCY)


@pytest.fixture(scope="module")
def simulator():
    return SimulatorDevice(Delay, LATENCY)


def idle_departures(not_before, latency):
    """Cycles at which the words leave an idle ``latency``-cycle pipeline: each is taken at its not-before cycle,
    or right after the word before it when that is later (NO_CYCLE: right after it)."""
    taken, last = [], -1
    for cycle in not_before:
        last = max(last + 1, int(cycle))
        taken.append(last)
    return np.array(taken) + latency


def test_outputs_carry_cycles_and_inputs_wait_for_theirs(player):
    words = np.arange(40, dtype=np.int64) * 7 % (1 << WIDTH)
    trace = TimedTrace()
    arrivals = [0, 5_000, 5_010, 250_000, 2_000_000]  # a burst of eight words at each
    for burst, arrival in enumerate(arrivals):
        trace.send("i", words[8 * burst:8 * burst + 8], at=arrival)
    trace.expect("o", len(words)).hold("offset", 3)
    result = player.run(trace)
    out = result.outputs["o"]
    assert out.words == [(int(w) + 3) % (1 << WIDTH) for w in words]
    expected = idle_departures(trace.inputs["i"].not_before, LATENCY)
    assert out.cycles.tolist() == expected.tolist()
    # The first word of each burst leaves exactly `latency` cycles after its arrival; the rest follow back to
    # back, except where the burst before it was still going in (5_010: the burst of 5_000 ends at 5_007).
    assert out.cycles[0::8].tolist() == [a + LATENCY for a in arrivals]
    assert np.all(np.diff(out.cycles[:8]) == 1)
    assert result.ports["i"].first_cycle == 0 and result.ports["i"].last_cycle == 2_000_007
    assert result.cycles == 2_000_007 + LATENCY + 1


def test_untimed_inputs_flow_back_to_back(player):
    words = list(range(100))
    result = player.run(TimedTrace({"i": words}, expect={"o": 100}))
    assert result.outputs["o"].cycles.tolist() == list(range(LATENCY, LATENCY + 100))
    assert result.ports["i"].first_cycle == 0 and result.ports["i"].last_cycle == 99


def test_a_cycle_in_the_past_means_as_soon_as_possible(player):
    trace = TimedTrace().send("i", range(300), at=100).send("i", [7], at=150).send("i", [8], cycles=[None])
    result = player.run(trace.expect("o", 302))
    cycles = result.outputs["o"].cycles
    assert cycles[299] == 100 + 299 + LATENCY
    assert cycles[300] == cycles[299] + 1 and cycles[301] == cycles[300] + 1


def test_stalls_never_take_a_word_before_its_cycle(player):
    rng = np.random.default_rng(5)
    words = rng.integers(0, 1 << WIDTH, 2_000)
    not_before = np.sort(rng.integers(0, 20_000, len(words)))
    not_before[rng.random(len(words)) < 0.5] = NO_CYCLE  # half of them follow the word before
    trace = TimedTrace().send("i", words, cycles=not_before).expect("o", len(words))
    result = player.run(trace, pause=0.4, seed=11)
    out = result.outputs["o"]
    assert out.words == words.tolist()
    floor = idle_departures(not_before, LATENCY)
    assert np.all(out.cycles >= floor)
    assert np.any(out.cycles > floor)  # the stalls happened
    assert np.all(np.diff(out.cycles) > 0)


@pytest.mark.parametrize("pause", [0.0, 0.3])
def test_player_and_simulator_agree_cycle_for_cycle(player, simulator, pause):
    rng = np.random.default_rng(2)
    trace = TimedTrace().hold("offset", 1000)
    for arrival in range(0, 3_000, 250):
        trace.send("i", rng.integers(0, 1 << WIDTH, int(rng.integers(1, 40))), at=arrival + int(rng.integers(0, 5)))
    count = len(trace.inputs["i"].words)
    trace.expect("o", count)
    got = player.run(trace, pause=pause, seed=7)
    want = simulator.run(trace, pause=pause, seed=7)
    assert got.outputs["o"].words == want.outputs["o"].words
    assert got.outputs["o"].cycles.tolist() == want.outputs["o"].cycles.tolist()
    assert got.ports == want.ports
    assert got.cycles == want.cycles


@pytest.mark.parametrize("device", ["player", "simulator"])
def test_held_inputs_are_packed_bits(request, device):
    trace = TimedTrace({"i": [0, 5, 0xFFFF]}, expect={"o": 3}, statics={"offset": 0xFFFF})  # offset -1
    assert request.getfixturevalue(device).run(trace).outputs["o"].words == [0xFFFF, 4, 0xFFFE]


def test_the_comparison_catches_one_cycle_of_difference(player):
    # A planted bug: one more pipeline stage. The simulator's run no longer matches the Player's.
    trace = TimedTrace().send("i", range(20), at=50).expect("o", 20)
    got = player.run(trace)
    slower = SimulatorDevice(Delay, LATENCY + 1).run(trace)
    assert got.outputs["o"].words == slower.outputs["o"].words
    assert (slower.outputs["o"].cycles - got.outputs["o"].cycles).tolist() == [1] * 20


def test_nested_payloads_agree_on_the_fifo():
    items = random_items(np.random.default_rng(4), 120)
    words = [pack(Item, item) for item in items]
    trace = TimedTrace().send("i", words[:60], at=10).send("i", words[60:], at=400).expect("o", len(words))
    got = PlayerDevice(StreamFIFO, 4).run(trace, pause=0.2, seed=3)
    want = SimulatorDevice(StreamFIFO, 4).run(trace, pause=0.2, seed=3)
    assert got.outputs["o"].words == want.outputs["o"].words == words
    assert got.outputs["o"].cycles.tolist() == want.outputs["o"].cycles.tolist()
    assert got.outputs["o"].cycles[60] >= 400


def test_cocotb_and_direct_runs_agree(player):
    trace = TimedTrace().send("i", range(50), at=20).send("i", range(50), at=1_000).expect("o", 100)
    direct = player.run(trace, pause=0.25, seed=2)
    cocotb = player.run(trace, pause=0.25, seed=2, direct=False)
    assert cocotb.outputs["o"].words == direct.outputs["o"].words
    assert cocotb.outputs["o"].cycles.tolist() == direct.outputs["o"].cycles.tolist()
    assert cocotb.cycles == direct.cycles


@pytest.mark.parametrize("device", ["player", "simulator"])
def test_packed_words_run_as_their_ints(request, device):
    # Words given as (n, limbs) packed arrays reach the device as they are; mixed with ints, they become ints.
    rng = np.random.default_rng(5)
    words = rng.integers(0, 1 << WIDTH, 90)
    packed = words.astype(np.uint64)[:, None]
    as_ints = TimedTrace().send("i", words[:40].tolist(), at=5).send("i", words[40:].tolist(), at=300)
    as_packed = TimedTrace().send("i", packed[:40], at=5).send("i", packed[40:], at=300)
    mixed = TimedTrace().send("i", packed[:40], at=5).send("i", words[40:].tolist(), at=300)
    assert isinstance(as_packed.inputs["i"].words, np.ndarray) and isinstance(mixed.inputs["i"].words, list)
    runs = [request.getfixturevalue(device).run(trace.expect("o", 90), pause=0.2, seed=4)
            for trace in (as_ints, as_packed, mixed)]
    assert runs[0].outputs["o"].words == words.tolist()
    for run in runs[1:]:
        assert run.outputs["o"].words == runs[0].outputs["o"].words
        assert run.outputs["o"].cycles.tolist() == runs[0].outputs["o"].cycles.tolist()


def test_both_devices_see_the_same_ports(player, simulator):
    assert player.ports == simulator.ports == (Port("i", "in", WIDTH), Port("o", "out", WIDTH))
    assert player.statics == simulator.statics == {"offset": WIDTH}
    assert player.inputs == ["i"] and player.outputs == ["o"]


@pytest.mark.parametrize("build, message", [
    (lambda t: t.send("i", [1, 2, 3], cycles=[10, None, 9]),
     r"^Trace port 'i', transfer #2: not-before cycle 9 comes before cycle 10 of transfer #0"),
    (lambda t: t.send("i", [1], at=10).send("i", [2, 3], cycles=[None, 4]),
     r"^Trace port 'i', transfer #2: not-before cycle 4 comes before cycle 10 of transfer #0"),
    (lambda t: t.send("i", [1, 2], cycles=[3, -5]), r"^Trace port 'i', transfer #1: not-before cycle -5 is negative"),
    (lambda t: t.send("i", [1], at=-1), r"^Trace port 'i', transfer #0: not-before cycle -1 is negative"),
    (lambda t: t.send("i", [1], cycles=np.array([-2])), r"^Trace port 'i', transfer #0: not-before cycle -2 is neg"),
    (lambda t: t.send("i", [1], cycles=[2.5]), r"^Trace port 'i', transfer #0: not-before cycle 2.5 is not an int"),
    (lambda t: t.send("i", [1, "x"]), r"^Trace port 'i', transfer #1: word 'x' is not an integer$"),
    (lambda t: t.send("i", [7]).send("i", np.array([[1], [-1]])),
     r"^Trace port 'i', transfer #2: packed word has a negative limb$"),
    (lambda t: t.send("i", [1, 2], cycles=[1]), r"^Trace port 'i': 1 not-before cycles for 2 words$"),
    (lambda t: t.send("i", [1], at=1, cycles=[1]), r"^Trace port 'i': give either 'at' or 'cycles', not both$"),
    (lambda t: t.expect("o", -1), r"^Trace port 'o': expected count must be a non-negative integer, not -1$"),
])
def test_malformed_traces_are_refused_as_they_are_built(build, message):
    with pytest.raises(TraceError, match=message):
        build(TimedTrace())


@pytest.mark.parametrize("device", ["player", "simulator"])
@pytest.mark.parametrize("trace, message", [
    (TimedTrace().send("i", [1, 1 << WIDTH]), r"^Trace port 'i', transfer #1: word 65536 does not fit 16 bits$"),
    (TimedTrace().send("i", [1, -1]), r"^Trace port 'i', transfer #1: word -1 does not fit 16 bits$"),
    (TimedTrace().send("i", [1]).send("i", [2, 1 << WIDTH]),
     r"^Trace port 'i', transfer #2: word 65536 does not fit 16 bits$"),
    (TimedTrace().send("i", [1]).send("i", np.array([[3], [1 << WIDTH]], dtype=np.uint64)),
     r"^Trace port 'i', transfer #2: packed word has bits set beyond the port's 16 bits$"),
    (TimedTrace().send("i", np.zeros((2, 2), dtype=np.uint64)),
     r"^Trace port 'i', transfers #0 on: packed words of 2 limbs, the port's 16 bits take 1$"),
    (TimedTrace().send("x", [1]), r"^Trace sends to 'x', which is not an input stream of the device \(inputs: i\)$"),
    (TimedTrace().send("o", [1]), r"^Trace sends to 'o', which is not an input stream"),
    (TimedTrace().expect("i", 1), r"^Trace expects transfers from 'i', which is not an output stream of the device"),
    (TimedTrace().hold("gain", 1), r"^Trace holds 'gain', which is not a held input of the device \(held inputs: "
                                   r"offset\)$"),
    (TimedTrace().hold("offset", 1 << WIDTH), r"^Held input 'offset': value 65536 does not fit 16 bits$"),
])
def test_traces_that_do_not_fit_the_device_are_refused(request, device, trace, message):
    with pytest.raises(TraceError, match=message):
        request.getfixturevalue(device).run(trace)


@pytest.mark.parametrize("device", ["player", "simulator"])
def test_a_run_that_does_not_finish_names_what_moved(request, device):
    trace = TimedTrace().send("i", [1, 2], cycles=[0, 10_000]).expect("o", 2)
    with pytest.raises(DeviceError, match=r"^Run did not finish within 300 cycles: i moved 1, o moved 1$"):
        request.getfixturevalue(device).run(trace, max_cycles=300)
