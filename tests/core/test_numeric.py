"""The numeric rules, checked against a direct big-integer transcription of DESIGN.md's formulas."""

import numpy as np
import pytest

from rpaccel.numeric import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    M_MAX,
    S_MAX,
    check_requant_params,
    mac,
    postprocess,
    requantize,
)


def reference_requantize(acc, m, s, relu):
    # Python integers never overflow; >> on them is the arithmetic (flooring) shift.
    value = (acc * m + (1 << (s - 1))) >> s if s > 0 else acc * m
    q = min(max(value, INT8_MIN), INT8_MAX)
    return max(q, 0) if relu else q


def test_requantize_matches_formula_on_random_values():
    rng = np.random.default_rng(7)
    acc = rng.integers(INT32_MIN, INT32_MAX, 20_000, endpoint=True)
    acc[::7] >>= rng.integers(0, 31, acc[::7].size)  # many small magnitudes too
    m = rng.integers(0, M_MAX, acc.size, endpoint=True)
    s = rng.integers(0, S_MAX, acc.size, endpoint=True)
    relu = rng.integers(0, 2, acc.size).astype(bool)
    got = requantize(acc, m, s, relu)
    want = [reference_requantize(int(a), int(mm), int(ss), bool(r)) for a, mm, ss, r in zip(acc, m, s, relu)]
    assert got.tolist() == want


@pytest.mark.parametrize(("acc", "m", "s", "expected"), [
    (-5, 1, 1, -2),            # -2.5 rounds half up to -2
    (-3, 1, 1, -1),            # -1.5 -> -1
    (5, 1, 1, 3),              # 2.5 -> 3
    (-7, 1, 2, -2),            # -1.75 -> -2
    (255, 1, 1, 127),          # 127.5 -> 128 -> clamped
    (-259, 1, 1, -128),        # -129.5 -> -129 -> clamped
    (INT32_MAX, M_MAX, 0, 127),
    (INT32_MIN, M_MAX, 0, -128),
    (INT32_MIN, M_MAX, S_MAX, 0),   # a tiny negative number rounds to 0
    (INT32_MAX, M_MAX, S_MAX, 0),
    (INT32_MIN, 0, 5, 0),
])
def test_requantize_edge_cases(acc, m, s, expected):
    assert requantize(acc, m, s) == expected
    assert reference_requantize(acc, m, s, False) == expected


def test_relu_after_requantisation():
    assert requantize(-1000, 1, 0, relu=True) == 0
    assert requantize(1000, 1, 0, relu=True) == 127


def test_postprocess_adds_bias_and_passes_raw_logits():
    assert postprocess(1000, -1000, 1, 0) == 0
    assert postprocess(INT32_MAX - 1, 1, 1, 0, raw=True) == INT32_MAX
    assert postprocess(-5000, 0, 1, 0, relu=True, raw=True) == -5000  # ReLU does not touch a raw logit


def test_overflow_is_an_error_not_a_wrap():
    with pytest.raises(OverflowError, match="accumulator plus bias holds 2147483648"):
        postprocess(INT32_MAX, 1, 1, 0)
    with pytest.raises(OverflowError, match="activation holds 128"):
        mac(0, 128, 1)
    with pytest.raises(OverflowError, match="accumulated partial sum"):
        mac(INT32_MAX, 1, 1)
    with pytest.raises(OverflowError, match="accumulator holds -2147483649"):
        requantize(INT32_MIN - 1, 1, 0)


def test_requant_params_are_validated():
    with pytest.raises(ValueError, match=r"multiplier m must be an integer in \[0, 65535\], not 65536"):
        check_requant_params(65536, 0)
    with pytest.raises(ValueError, match=r"shift s must be an integer in \[0, 63\], not -1"):
        check_requant_params(1, -1)
    with pytest.raises(TypeError, match="must hold integers"):
        requantize(1.5, 1, 0)
