"""The top-k driver: query framing and packing against the golden framing and the scalar packer."""

import numpy as np
import pytest
from amaranth.hdl import Const

from rpaccel.host.driver.codec import CodecError, to_ints
from rpaccel.host.driver.topk import decode_results, encode_queries, pack_elements, query_columns, unpack_results
from rpaccel.rtl.topk import topk_in_layout, topk_out_layout
from rpaccel.sim.golden.topk import Query, random_queries, stream_elements, unit_model


@pytest.mark.parametrize(("lanes", "separate_end"), [(1, False), (3, False), (4, True)])
def test_encoded_queries_are_the_golden_elements(lanes, separate_end):
    rng = np.random.default_rng(lanes)
    queries = random_queries(rng, 60, k_max=8, max_candidates=40, index_bits=12)
    elements = stream_elements(queries, k_max=8, lanes=lanes, separate_end=separate_end)
    layout = topk_in_layout(8, lanes=lanes, index_bits=12)
    expected = [const_bits(layout, element) for element in elements]
    words = encode_queries(queries, k_max=8, lanes=lanes, index_bits=12, separate_end=separate_end)
    assert to_ints(words) == expected
    assert pack_elements(elements, 8, lanes=lanes, index_bits=12) == expected


def test_sub_batches_start_new_elements():
    columns = query_columns([5, 6, 7, 8, 9], [0, 1, 2, 3, 4], 2, lanes=2, batches=[3, 2])
    assert columns["candidates"]["score"].tolist() == [[5, 6], [7, 0], [8, 9]]
    assert columns["candidates"]["keep"].tolist() == [[1, 1], [1, 0], [1, 1]]
    assert columns["last"].tolist() == [0, 0, 1] and columns["k"].tolist() == [0, 0, 2]
    empty = query_columns([], [], 3, lanes=2)
    assert empty["last"].tolist() == [1] and not empty["candidates"]["keep"].any()


def test_encoding_errors():
    with pytest.raises(ValueError, match=r"Top-k k must be an integer in \[1, K_MAX = 8\], not 9"):
        encode_queries([Query.make([1, 2], 9)], k_max=8)
    # Unchecked, a k the field can hold goes out (the unit answers with an error element); one it cannot is refused.
    assert len(encode_queries([Query.make([1, 2], 9)], k_max=8, check=False)) == 2
    with pytest.raises(CodecError, match=r"row 1: payload.k = 16 does not fit unsigned\(4\)"):
        encode_queries([Query.make([1, 2], 16)], k_max=8, check=False)
    with pytest.raises(CodecError, match=r"row 0: payload.candidates\[1\].score = 2147483648 does not fit"):
        encode_queries([Query.make([1, 1 << 31], 2)], k_max=8, lanes=2)
    with pytest.raises(ValueError, match=r"Sub-batch sizes \[1, 2\] do not add up to the query's 2 candidates"):
        encode_queries([Query.make([1, 2], 1, batches=[1, 2])], k_max=8)


def test_results_decode_the_unit_outputs():
    rng = np.random.default_rng(3)
    queries = random_queries(rng, 40, k_max=8, max_candidates=30)
    results = unit_model(stream_elements(queries, k_max=8, check=False), 8)
    layout = topk_out_layout()
    words = [const_bits(layout, result) for result in results]
    assert unpack_results(words) == results
    columns = decode_results(words)
    assert columns["score"].tolist() == [result["score"] for result in results]
    assert columns["last"].sum() == len(queries)


def const_bits(shape, value):
    """The bits of Amaranth's own constant of ``value`` (the oracle of the packed words)."""
    return Const.cast(shape.const(value)).value
