"""Golden model of :class:`rpaccel.rtl.postproc.PostProcessor`, and its random stimulus."""

import numpy as np

from ...numeric import INT32_MAX, INT32_MIN, M_MAX, S_MAX, postprocess

__all__ = ["EDGE_CASES", "postprocess_payloads", "random_postprocess_payloads"]


def postprocess_payloads(payloads):
    """Expected outputs (list of int) for a sequence of ``PostProcessIn`` payload dicts."""
    if not payloads:
        return []
    acc = np.array([p["acc"] for p in payloads], dtype=np.int64)
    bias = np.array([p["bias"] for p in payloads], dtype=np.int64)
    fields = {k: np.array([p["params"][k] for p in payloads], dtype=np.int64) for k in ("m", "s", "relu", "raw")}
    return [int(v) for v in postprocess(acc, bias, fields["m"], fields["s"], fields["relu"], fields["raw"])]


def _payload(acc, bias, m, s, relu=0, raw=0):
    return {"acc": acc, "bias": bias, "params": {"m": m, "s": s, "relu": relu, "raw": raw}}


#: Hand-picked cases: extreme accumulators, s = 0, m = 0 and 0xFFFF, rounding of negative halves, ReLU, raw.
EDGE_CASES = [
    _payload(INT32_MAX, 0, M_MAX, S_MAX),
    _payload(INT32_MIN, 0, M_MAX, S_MAX),
    _payload(INT32_MAX, 0, M_MAX, 47),
    _payload(INT32_MIN, 0, M_MAX, 47),
    _payload(INT32_MIN, 0, M_MAX, 40),
    _payload(INT32_MAX, 0, M_MAX, 0),
    _payload(INT32_MIN, 0, M_MAX, 0),
    _payload(INT32_MIN, 0, 0, 0),
    _payload(INT32_MAX, 0, 0, 13),
    _payload(127, 0, 1, 0),
    _payload(128, 0, 1, 0),
    _payload(-128, 0, 1, 0),
    _payload(-129, 0, 1, 0),
    _payload(-5, 0, 1, 1),      # -2.5 rounds to -2 (half up)
    _payload(-3, 0, 1, 1),      # -1.5 rounds to -1
    _payload(-1, 0, 1, 1),      # -0.5 rounds to 0
    _payload(5, 0, 1, 1),       # 2.5 rounds to 3
    _payload(-7, 0, 1, 2),      # -1.75 rounds to -2
    _payload(-6, 0, 1, 2),      # -1.5 rounds to -1
    _payload(255, 0, 1, 1),     # 127.5 rounds to 128, clamps to 127
    _payload(-257, 0, 1, 1),    # -128.5 rounds to -128
    _payload(-258, 0, 1, 1),    # -129 clamps to -128
    _payload(-259, 0, 1, 1),    # -129.5 rounds to -129, clamps to -128
    _payload(1000, -3000, 300, 10, relu=1),
    _payload(-1000, 0, 300, 10, relu=1),
    _payload(1000, 0, 300, 10, relu=1),
    _payload(INT32_MAX - 5, 5, 7, 3, raw=1),
    _payload(INT32_MIN + 5, -5, 7, 3, raw=1, relu=1),
    _payload(-123456, 789, M_MAX, 63),
    _payload(123456, -789, 1, 63),
]


def random_postprocess_payloads(rng, count):
    """``count`` random ``PostProcessIn`` payload dicts.

    Accumulator magnitudes are log-uniform over the int32 range; most shifts are chosen so that the result
    lands near the int8 range (the interesting part: rounding and clamping), the rest are uniform over [0, 63].
    The bias is drawn so that ``acc + bias`` stays an int32.
    """
    payloads = []
    for _ in range(count):
        bits = int(rng.integers(0, 32))
        acc = int(rng.integers(-(1 << bits), 1 << bits))
        bias_bits = int(rng.integers(0, 32))
        bias = int(rng.integers(-(1 << bias_bits), 1 << bias_bits))
        bias = min(max(bias, INT32_MIN - acc), INT32_MAX - acc)
        m = int(rng.choice([0, 1, M_MAX])) if rng.random() < 0.1 else int(rng.integers(0, M_MAX + 1))
        if rng.random() < 0.75:
            magnitude = max(abs(acc + bias) * max(m, 1), 1).bit_length()
            s = int(np.clip(magnitude - 8 + rng.integers(-3, 4), 0, S_MAX))
        else:
            s = int(rng.integers(0, S_MAX + 1))
        payloads.append(_payload(acc, bias, m, s, relu=int(rng.random() < 0.3), raw=int(rng.random() < 0.1)))
    return payloads
