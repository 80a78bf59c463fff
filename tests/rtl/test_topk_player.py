"""The small preset's top-k unit on Verilator through the file-driven player: a long random run, throughput.

Lanes, segment sizes and a planted bug are covered on the Amaranth simulator (test_topk.py); a two-lane unit
runs on Verilator in ``rpaccel bench topk``.
"""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.host.driver.topk import pack_elements, unpack_results
from rpaccel.rtl.topk import TopKUnit, unit_latency
from rpaccel.sim.golden.topk import Query, random_queries, stream_elements, unit_model
from rpaccel.sim.player import Player

pytestmark = pytest.mark.verilator

K_MAX = preset("small").k_max


def play(player, elements, k_max, *, lanes=1, pause=0.3, seed=1):
    expected = unit_model(elements, k_max)
    result = player.run({"i": pack_elements(elements, k_max, lanes=lanes)}, expect={"o": len(expected)},
                        pause=pause, seed=seed, packed=True)
    return result, unpack_results(result.outputs["o"]), expected


def test_small_preset_unit_long_random_run_is_bit_exact():
    rng = np.random.default_rng(21)
    queries = random_queries(rng, 400, k_max=K_MAX, max_candidates=12 * K_MAX)
    elements = stream_elements(queries, k_max=K_MAX)
    result, got, expected = play(Player(TopKUnit, K_MAX), elements, K_MAX, pause=0.3, seed=3)
    assert len(elements) > 100_000
    assert got == expected
    assert result.cycles > len(elements) / 0.7 * 0.9  # the stalls happened


def test_small_preset_unit_sustains_one_candidate_per_cycle():
    # RecPipe-sized queries (4,096 candidates, k = K_MAX) back to back, no idle input, no back-pressure.
    rng = np.random.default_rng(22)
    queries = [Query.make(rng.integers(-(1 << 31), 1 << 31, 4096), K_MAX) for _ in range(12)]
    elements = stream_elements(queries, k_max=K_MAX)
    result, got, expected = play(Player(TopKUnit, K_MAX), elements, K_MAX, pause=0.0)
    assert got == expected
    i, o = result.ports["i"], result.ports["o"]
    assert i.last_cycle - i.first_cycle + 1 == len(elements)       # one candidate accepted every cycle
    assert o.first_cycle - (i.first_cycle + 4096 - 1) == unit_latency(K_MAX)
    assert o.last_cycle - i.last_cycle == unit_latency(K_MAX) + K_MAX - 1
