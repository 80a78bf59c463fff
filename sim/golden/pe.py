"""Register-level golden model of :class:`rpaccel.rtl.pe.ProcessingElement`."""

from ...numeric import INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, check_int32, mac

__all__ = ["PEModel", "random_pe_inputs"]


class PEModel:
    """What a processing element holds and outputs, cycle by cycle.

    ``outputs()`` gives the outputs seen during a cycle (``w_out``: both weight banks); ``step(inputs)`` applies
    one clock edge with the cycle's inputs (a dict keyed by port name; ``w_in`` holds one weight per bank).
    """

    def __init__(self):
        self.weight = [0, 0]
        self.selected = 0
        self.product = 0
        self.a_out = 0
        self.bank_out = 0
        self.psum_out = 0

    def outputs(self):
        return {"a_out": self.a_out, "bank_out": self.bank_out, "psum_out": self.psum_out,
                "w_out": list(self.weight)}

    def step(self, inputs):
        if inputs["en"]:
            self.psum_out = int(check_int32("partial sum", inputs["psum_in"] + self.product))
            self.product = int(mac(0, self.a_out, self.selected))
            self.selected = self.weight[inputs["bank_in"]]
            self.a_out = inputs["a_in"]
            self.bank_out = inputs["bank_in"]
        if inputs["w_shift"]:
            self.weight[inputs["w_bank"]] = inputs["w_in"][inputs["w_bank"]]


def random_pe_inputs(rng, count, *, stall=0.25, shift=0.3):
    """Random PE inputs, one dict per cycle, with ``count`` enabled cycles (multiply-accumulates); each cycle is
    stalled (``en`` low) with probability ``stall`` and shifts the weight chain with probability ``shift``.

    Partial sums stay 2**14 inside the int32 range, so no cycle can overflow; a quarter of the activations and
    weights are the extreme values -128 and 127, a tenth of the partial sums are extremes or zero.
    """
    if not 0 <= stall < 1:
        raise ValueError(f"Stall probability must be in [0, 1), not {stall!r}")
    margin = INT8_MIN * INT8_MIN
    psum_extremes = [INT32_MIN + margin, INT32_MAX - margin, 0]

    def int8():
        if rng.random() < 0.25:
            return int(rng.choice([INT8_MIN, INT8_MAX]))
        return int(rng.integers(INT8_MIN, INT8_MAX + 1))

    cycles, enabled = [], 0
    while enabled < count:
        en = int(rng.random() >= stall)
        enabled += en
        psum = int(rng.choice(psum_extremes)) if rng.random() < 0.1 else \
            int(rng.integers(INT32_MIN + margin, INT32_MAX - margin + 1))
        cycles.append({
            "en": en, "a_in": int8(), "bank_in": int(rng.integers(2)), "psum_in": psum, "w_in": [int8(), int8()],
            "w_shift": int(rng.random() < shift), "w_bank": int(rng.integers(2)),
        })
    return cycles
